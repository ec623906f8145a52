import { spawn } from "bun";
import { tempDir, freePort, waitFor } from "./env.ts";
import type { CertFiles } from "./certs.ts";

export interface TlsRedis {
  /** rediss://USER@127.0.0.1:PORT, without the password. */
  url: string;
  port: number;
  stop(): Promise<void>;
}

/**
 * A real redis-server speaking only TLS on a free port (no plain port), where the default user is
 * off and only `user` with `password` may do anything.
 */
export async function startTlsRedis(server: CertFiles, ca: string, user: string, password: string): Promise<TlsRedis> {
  const dir = tempDir("redis-tls");
  const port = await freePort();
  const proc = spawn([
    "redis-server", "--port", "0", "--tls-port", String(port),
    "--tls-cert-file", server.cert, "--tls-key-file", server.key, "--tls-ca-cert-file", ca, "--tls-auth-clients", "no",
    "--user", "default", "off", "--user", user, "on", `>${password}`, "~*", "&*", "+@all",
    "--save", "", "--appendonly", "no", "--dir", dir.path,
  ], { stdout: "ignore", stderr: "ignore" });
  const ping = async () => {
    if (proc.exitCode !== null) throw new Error(`redis-server with TLS exited with ${proc.exitCode}`);
    const p = spawn(["redis-cli", "--tls", "--cacert", ca, "-h", "127.0.0.1", "-p", String(port), "--user", user, "--pass", password, "--no-auth-warning", "ping"], { stdout: "pipe", stderr: "ignore" });
    const out = await new Response(p.stdout).text();
    await p.exited;
    return out.trim() === "PONG";
  };
  try {
    await waitFor("redis-server with TLS to answer", ping);
  } catch (e) {
    proc.kill("SIGKILL");
    await proc.exited;
    dir.remove();
    throw e;
  }
  return {
    url: `rediss://${user}@127.0.0.1:${port}`,
    port,
    async stop() {
      proc.kill("SIGKILL");
      await proc.exited;
      dir.remove();
    },
  };
}
