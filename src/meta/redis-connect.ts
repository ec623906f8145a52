import { createClient } from "redis";
import { redactUrl } from "../util/log.ts";
import { createSlotLocator, describeCluster, isClusterUrl, parseClusterUrl } from "./redis-cluster.ts";
import { connectFollowing } from "./redis-failover.ts";
import { createSentinelLocator, describeSentinels, isSentinelUrl, parseSentinelUrl } from "./redis-sentinel.ts";

export type RedisClient = ReturnType<typeof createClient>;

/** What reaching Redis takes besides its URL. */
export interface RedisAccess {
  /** CA that signed a rediss:// server's certificate (undefined: the system CAs). */
  ca?: Buffer;
  /** Password of the URL's user, kept out of the URL (and so out of argv). */
  password?: string;
  /** Password of the sentinels themselves (their requirepass) of a redis+sentinel:// URL. */
  sentinelPassword?: string;
}

export interface RedisTarget extends RedisAccess {
  /** redis://, rediss:// (TLS), unix:///path/to/socket, redis+sentinel:// (redis-sentinel.ts) or redis+cluster:// (redis-cluster.ts), or their rediss+ forms. */
  url: string;
}

function clientOptions(t: RedisTarget, connected: () => boolean) {
  // Before the first connection a few quick tries, then a clear error; once connected, retry forever.
  const fail = { connectTimeout: 5000, reconnectStrategy: (n: number) => (connected() || n < 3 ? Math.min(100 * 2 ** n, 2000) : new Error("gave up")) };
  if (t.url.startsWith("unix://")) {
    const u = new URL(t.url);
    return { socket: { path: decodeURIComponent(u.pathname), ...fail }, password: t.password ?? (u.password || undefined), username: u.username || undefined };
  }
  // node-redis lets the URL's own parts override these; the CLI refuses a password in both places.
  return { url: t.url, socket: { ...fail, ...(t.ca ? { ca: t.ca } : {}) }, ...(t.password !== undefined ? { password: t.password } : {}) };
}

/**
 * A connected client, or an error naming the URL (without its password). No offline queue: with
 * Redis down, commands fail at once instead of piling up. onEvent hears the connection drop and return.
 */
export async function connectRedis(target: RedisTarget, onEvent?: (event: "error" | "ready", detail?: string) => void): Promise<RedisClient> {
  const url = target.url;
  // Through sentinels or on a cluster, operations wait for the next master instead of failing at once.
  if (isSentinelUrl(url)) {
    const u = { ...parseSentinelUrl(url), ...(target.ca ? { ca: target.ca } : {}) };
    const where = `the Redis ${describeSentinels(u)}`;
    const locator = await createSentinelLocator(u, target.sentinelPassword).catch((e: Error) => Promise.reject(new Error(`cannot connect to ${where}: ${e.message}`)));
    return connectFollowing(locator, u, where, target.password, onEvent);
  }
  if (isClusterUrl(url)) {
    const u = { ...parseClusterUrl(url), ...(target.ca ? { ca: target.ca } : {}) };
    const where = describeCluster(u);
    const locator = await createSlotLocator(u, target.password).catch((e: Error) => Promise.reject(new Error(`cannot connect to ${where}: ${e.message}`)));
    return connectFollowing(locator, u, where, target.password, onEvent);
  }
  let everReady = false;
  const client = createClient({ ...clientOptions(target, () => everReady), disableOfflineQueue: true });
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
    // A Redis that wants a password accepts the connection and refuses the first command (NOAUTH).
    await Promise.race([connect.then(() => client.ping()), timeout]);
  } catch (e) {
    await client.disconnect().catch(() => {});
    throw new Error(`cannot connect to Redis at ${redactUrl(url)}: ${lastError || (e as Error).message}`);
  }
  return client;
}
