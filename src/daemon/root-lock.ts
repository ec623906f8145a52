import { dlopen, FFIType } from "bun:ffi";
import { closeSync, ftruncateSync, mkdirSync, openSync, readFileSync, writeSync } from "node:fs";
import { join } from "node:path";

const LOCK_EX = 2, LOCK_NB = 4;

/**
 * Exclusive lock on a root path: two daemons on one root (or one private Redis data dir) would
 * corrupt each other. The lock goes with the process, also when it crashes.
 */
export function lockRoot(stateDir: string, rootPath: string): { release(): void } {
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const path = join(stateDir, "daemon.lock");
  const fd = openSync(path, "a+");
  const libc = dlopen("libc.so.6", { flock: { args: [FFIType.i32, FFIType.i32], returns: FFIType.i32 } });
  if (libc.symbols.flock(fd, LOCK_EX | LOCK_NB) !== 0) {
    closeSync(fd);
    let holder = "";
    try {
      holder = readFileSync(path, "utf8").trim();
    } catch {
      // unreadable: say nothing about the holder
    }
    throw new Error(`another mcfs daemon${holder ? ` (pid ${holder})` : ""} is using root path ${rootPath}; stop it first`);
  }
  ftruncateSync(fd, 0);
  writeSync(fd, `${process.pid}\n`, 0);
  return { release: () => closeSync(fd) };
}
