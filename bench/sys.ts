/** Small process and mount helpers shared by bench.ts, probe.ts and gluster.ts. */
import { spawn, spawnSync, type Subprocess } from "bun";
import * as fs from "node:fs";
import { join } from "node:path";

/**
 * Touch mib MiB of RAM and hold it (a file in /dev/shm) until the returned function gives it back. On
 * this machine (a Firecracker VM) the host backs guest memory at first touch, and its balloon takes
 * free memory back about 2 s after it is freed (free page reporting): page cache grown into such
 * memory is written at ~360 MB/s against ~5 GB/s into memory touched before. A case that fills page
 * cache pays for that, and the target that runs first pays most. So each big-file case gives back
 * memory held warm just before it runs, and fills what it freed before the host takes it.
 */
export function holdWarm(mib: number): () => void {
  const f = `/dev/shm/mcfs-bench-warm-${process.pid}-${++warmed}`;
  const r = spawnSync(["dd", "if=/dev/zero", `of=${f}`, "bs=1M", `count=${mib}`], { stdout: "ignore", stderr: "pipe" });
  if (r.exitCode !== 0) console.error(`bench: could not warm ${mib} MiB of memory: ${r.stderr.toString().trim()}`);
  return () => fs.rmSync(f, { force: true });
}
let warmed = 0;

/** Touch mib MiB of RAM once and give it back at once (see holdWarm). */
export function warmMemory(mib: number): void {
  holdWarm(mib)();
}

export function mounted(p: string): boolean {
  return fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) => l.split(" ")[4] === p);
}

export async function until(what: string, cond: () => boolean): Promise<void> {
  const end = Date.now() + 30_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}

export function alive(pid: number): boolean {
  try {
    // A zombie still answers kill 0; it is dead for our purpose (nobody here may reap the bricks).
    return fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.[0] !== "Z";
  } catch {
    return false;
  }
}

/** The argv of a process; [] once it is gone. */
export function cmdline(pid: number): string[] {
  try {
    return fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0").slice(0, -1);
  } catch {
    return [];
  }
}

/** The start time of a process (field 22 of its stat): with the pid, it names one process even after pids wrap. */
export function startTime(pid: number): string | undefined {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ")[19];
  } catch {
    return undefined;
  }
}

/** Lazily unmount everything mounted at or below dir, deepest first. */
export function unmountUnder(dir: string): void {
  const points = fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").map((l) => l.split(" ")[4]!).filter((p) => p === dir || p?.startsWith(`${dir}/`));
  for (const p of points.sort((x, y) => y.length - x.length)) spawnSync(["umount", "-l", p]);
}

/**
 * A redis-server saving nothing, on a unix socket in work, once it listens. Its cwd is work: redis
 * rewrites its command line, so that is how a later bench finds it if this one is killed.
 */
export async function startRedis(work: string): Promise<{ redis: Subprocess; sock: string }> {
  const sock = join(work, "redis.sock");
  const redis = spawn(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no"], { cwd: work, stdout: "ignore", stderr: "ignore" });
  await until("redis socket", () => fs.existsSync(sock) || redis.exitCode !== null);
  if (redis.exitCode !== null) throw new Error(`redis-server exited with ${redis.exitCode}`);
  return { redis, sock };
}

/** libfuse's passthrough_ll example, compiled into dir from the libfuse3-dev examples: its path. */
export function buildPassthrough(dir: string): string {
  const src = "/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c";
  const out = join(dir, "passthrough_ll");
  const r = spawnSync(["cc", "-O2", "-o", out, src, ...spawnSync(["pkg-config", "--cflags", "--libs", "fuse3"]).stdout.toString().trim().split(/\s+/)], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`building passthrough_ll failed: ${r.stderr}`);
  return out;
}
