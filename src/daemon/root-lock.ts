import { dlopen, FFIType } from "bun:ffi";
import { closeSync, existsSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeFileSync, writeSync } from "node:fs";
import { join } from "node:path";

const LOCK_EX = 2, LOCK_NB = 4;
/** How long a killed holder, its FUSE connection aborted, may take to let go of the lock. */
const FREED_WITHIN_MS = 10_000;
const SIGKILL_BIT = 1n << 8n;

export interface RootLock {
  /** The FUSE connection (its id under /sys/fs/fuse/connections) this daemon mounted: noted beside the lock, with its pid. */
  mounted(connection: number): void;
  release(): void;
  /** A killed daemon that still held the lock when this one started: the FUSE connection aborted to free it. */
  freed?: { pid: number; connection: number };
}

/**
 * Whether pid is being killed: SIGKILL taken, or its main thread gone while others live. A daemon
 * killed while one of its threads waits in the kernel on a lock that only its own answer would free
 * (the kernel takes a directory's lock to drop a name in it, and a request holding that lock waits
 * for this daemon) never finishes dying: its /dev/fuse stays open, so the request is never failed.
 */
function dying(pid: number): boolean {
  try {
    const status = readFileSync(`/proc/${pid}/status`, "utf8");
    const pending = BigInt(`0x${/^ShdPnd:\s+([0-9a-f]+)/m.exec(status)?.[1] ?? "0"}`);
    return /^State:\s+Z/m.test(status) || (pending & SIGKILL_BIT) !== 0n;
  } catch {
    return false;
  }
}

/**
 * Exclusive lock on a root path: two daemons on one root (or one private Redis data dir) would
 * corrupt each other. The lock goes with the process, also when it crashes; a holder killed while the
 * kernel held it (see dying) has the FUSE connection it mounted aborted, which lets it die.
 */
export function lockRoot(stateDir: string, rootPath: string): RootLock {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const path = join(stateDir, "daemon.lock");
  // "pid connection": the lock file itself holds the pid alone (what supervisors read).
  const connPath = join(stateDir, "daemon.connection");
  const fd = openSync(path, "a+");
  const libc = dlopen("libc.so.6", { flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 } });
  const take = () => libc.symbols.flock(fd, LOCK_EX | LOCK_NB) === 0;
  let freed: RootLock["freed"];
  let got = take();
  if (!got) {
    let holder = "";
    try {
      holder = readFileSync(path, "utf8").trim();
    } catch {
      // unreadable: say nothing about the holder
    }
    const pid = Number(holder);
    let connection: number | undefined;
    try {
      const [p, c] = readFileSync(connPath, "utf8").trim().split(" ").map(Number);
      if (p === pid) connection = c;
    } catch {
      // none noted: it never mounted
    }
    const abort = `/sys/fs/fuse/connections/${connection}/abort`;
    if (pid > 0 && connection !== undefined && connection >= 0 && dying(pid) && existsSync(abort)) {
      writeFileSync(abort, "1");
      const end = Date.now() + FREED_WITHIN_MS;
      while (!(got = take()) && Date.now() < end) Bun.sleepSync(20);
      if (got) freed = { pid, connection };
    }
    if (!got) {
      closeSync(fd);
      throw new Error(`another mcfs daemon${pid > 0 ? ` (pid ${pid})` : ""} is using root path ${rootPath}; stop it first`);
    }
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  return {
    mounted(connection) {
      writeFileSync(connPath, `${process.pid} ${connection}\n`);
    },
    release: () => closeSync(fd),
    ...(freed ? { freed } : {}),
  };
}
