import { spawn, type Subprocess } from "bun";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { dlopen, FFIType, ptr } from "bun:ffi";
import { MCFS, freePort, waitFor } from "./env.ts";

export function isMounted(path: string): boolean {
  return readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) => l.split(" ")[4] === path);
}

const libc = dlopen("libc.so.6", { umount2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 } });

/** Last resort after a failed test: detach a mount left behind. */
export function forceUnmount(path: string): void {
  while (isMounted(path)) if (libc.symbols.umount2(ptr(Buffer.from(path + "\0")), 2) !== 0) break;
}

export interface TestDaemon {
  mnt: string;
  root: string;
  port: number;
  proc: Subprocess;
  log(): string;
  /** SIGTERM and wait for exit; resolves with the exit code. */
  stop(): Promise<number>;
  kill(): Promise<void>;
}

export interface DaemonSpec {
  base: string;
  name: string;
  redisUrl?: string;
  args?: string[];
  root?: string;
  mnt?: string;
  /** Run the daemon as this user (uid = gid, no other groups) instead of root. */
  uid?: number;
  /** How long its start may take before the mount is given up on: longer for a start-up scan of many files. */
  mountWithinMs?: number;
  /** Its peer port (a restart at the same address); a free one otherwise. */
  port?: number;
}

/** The pid of the private redis-server a daemon started without -u (from its log; NaN when it logged none). */
export function privateRedisPid(d: Pick<TestDaemon, "log">): number {
  return Number(/"pid":(\d+),"msg":"no --redis_url given/.exec(d.log())?.[1]);
}

/** Start `mcfs daemon` with its own root, mount and cache dir; resolves once the mount is live. */
export async function startDaemon(spec: DaemonSpec): Promise<TestDaemon> {
  const root = spec.root ?? join(spec.base, `${spec.name}-root`);
  const mnt = spec.mnt ?? join(spec.base, `${spec.name}-mnt`);
  const cache = join(spec.base, `${spec.name}-cache`);
  mkdirSync(root, { recursive: true });
  const port = spec.port ?? (await freePort());
  const logPath = join(spec.base, `${spec.name}.log`);
  writeFileSync(logPath, "");
  const secret = join(spec.base, "cluster-secret");
  if (spec.redisUrl && !existsSync(secret)) writeFileSync(secret, "test-cluster-secret-0123456789\n", { mode: 0o600 });
  const cluster = spec.redisUrl ? ["-u", spec.redisUrl, ...(spec.args?.includes("--insecure") ? [] : ["--cluster-secret-file", secret])] : [];
  const asUser = spec.uid === undefined ? [] : ["setpriv", `--reuid=${spec.uid}`, `--regid=${spec.uid}`, "--clear-groups"];
  const args = [...asUser, MCFS, "daemon", "-f", mnt, "-r", root, "-p", String(port), "-i", "127.0.0.1", ...cluster, ...(spec.args ?? [])];
  const proc = spawn(args, { stdout: Bun.file(logPath), stderr: Bun.file(logPath), env: { ...process.env, MULTICLOUD_FS_DISK_CACHE: cache } });
  const log = () => {
    try {
      return readFileSync(logPath, "utf8");
    } catch {
      return "";
    }
  };
  try {
    await waitFor(`mount of ${mnt}`, () => {
      if (proc.exitCode !== null) throw new Error(`mcfs daemon exited with ${proc.exitCode} before mounting:\n${log()}`);
      return isMounted(mnt) && log().includes('"mounted"');
    }, spec.mountWithinMs);
  } catch (e) {
    proc.kill("SIGKILL");
    await proc.exited;
    forceUnmount(mnt);
    throw e;
  }
  return {
    mnt, root, port, proc, log,
    async stop() {
      if (proc.exitCode === null) proc.kill("SIGTERM");
      const code = await proc.exited;
      forceUnmount(mnt);
      return code;
    },
    async kill() {
      proc.kill("SIGKILL");
      await proc.exited;
    },
  };
}
