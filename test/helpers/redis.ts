import { spawn } from "bun";
import { existsSync, rmSync } from "node:fs";
import { join } from "node:path";
import { tempDir, waitFor } from "./env.ts";

export interface TestRedis {
  url: string;
  pid: number;
  stop(): Promise<void>;
  /** Run a redis-cli command against it. */
  cli(...args: string[]): Promise<string>;
  /** Freeze it (SIGSTOP): connections stay open, nothing answers. */
  pause(): Promise<void>;
  resume(): Promise<void>;
  /** Its data directory (dump.rdb goes there on SAVE). */
  readonly dir: string;
  /** kill -9, let prepare change the data directory, start again on the same socket. */
  restart(prepare?: (dir: string) => void): Promise<void>;
}

/** A real redis-server on a unix socket in a temp dir (no TCP port). */
export async function startRedis(): Promise<TestRedis> {
  const dir = tempDir("redis");
  const sock = join(dir.path, "redis.sock");
  const launch = async () => {
    const p = spawn(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", dir.path], { stdout: "ignore", stderr: "ignore" });
    await waitFor("redis socket", () => existsSync(sock) || p.exitCode !== null);
    if (p.exitCode !== null) throw new Error("redis-server exited at start");
    return p;
  };
  let proc = await launch();
  const cli = async (...args: string[]) => {
    const p = spawn(["redis-cli", "-s", sock, ...args], { stdout: "pipe", stderr: "pipe" });
    const out = await new Response(p.stdout).text();
    await p.exited;
    return out.trim();
  };
  await waitFor("redis ping", async () => (await cli("ping")) === "PONG");
  return {
    url: `unix://${sock}`,
    get pid() {
      return proc.pid;
    },
    dir: dir.path,
    cli,
    async restart(prepare) {
      proc.kill("SIGKILL");
      await proc.exited;
      rmSync(sock, { force: true });
      prepare?.(dir.path);
      proc = await launch();
      await waitFor("redis ping", async () => (await cli("ping")) === "PONG");
    },
    async pause() {
      proc.kill("SIGSTOP");
    },
    async resume() {
      proc.kill("SIGCONT");
    },
    async stop() {
      proc.kill("SIGKILL");
      await proc.exited;
      dir.remove();
    },
  };
}
