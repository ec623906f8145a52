import { createClient } from "redis";
import { redactUrl } from "../util/log.ts";

export type RedisClient = ReturnType<typeof createClient>;

/** Client options from a URL: redis://, rediss:// (TLS), or unix:///path/to/socket. */
function clientOptions(url: string, connected: () => boolean) {
  // Before the first connection a few quick tries, then a clear error; once connected, retry forever.
  const fail = { connectTimeout: 5000, reconnectStrategy: (n: number) => (connected() || n < 3 ? Math.min(100 * 2 ** n, 2000) : new Error("gave up")) };
  if (url.startsWith("unix://")) {
    const u = new URL(url);
    return { socket: { path: decodeURIComponent(u.pathname), ...fail }, password: u.password || undefined, username: u.username || undefined };
  }
  return { url, socket: fail };
}

/**
 * A connected client, or an error naming the URL (without its password). No offline queue: with
 * Redis down, commands fail at once instead of piling up. onEvent hears the connection drop and return.
 */
export async function connectRedis(url: string, onEvent?: (event: "error" | "ready", detail?: string) => void): Promise<RedisClient> {
  let everReady = false;
  const client = createClient({ ...clientOptions(url, () => everReady), disableOfflineQueue: true });
  let lastError = "";
  client.on("error", (e: Error) => {
    if (e.message !== lastError) onEvent?.("error", e.message);
    lastError = e.message;
  });
  client.on("ready", () => {
    everReady = true;
    if (lastError) onEvent?.("ready");
    lastError = "";
  });
  const connect = client.connect();
  const timeout = new Promise<never>((_, rej) => setTimeout(() => rej(new Error("timed out after 10 s")), 10_000).unref());
  try {
    await Promise.race([connect, timeout]);
  } catch (e) {
    await client.disconnect().catch(() => {});
    throw new Error(`cannot connect to Redis at ${redactUrl(url)}: ${lastError || (e as Error).message}`);
  }
  return client;
}
