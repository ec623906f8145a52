import { dlopen, FFIType } from "bun:ffi";
import * as fs from "node:fs";
import { E, FsError, toErrno } from "../util/errno.ts";

const MFD_CLOEXEC = 1, MFD_ALLOW_SEALING = 2;
const F_DUPFD_CLOEXEC = 1030, F_ADD_SEALS = 1033;
const F_SEAL_SEAL = 1, F_SEAL_SHRINK = 2, F_SEAL_GROW = 4, F_SEAL_WRITE = 8;
const NAME = Buffer.from("mcfs-copy\0");

let libc: ReturnType<typeof load> | undefined;
const load = () =>
  dlopen("libc.so.6", {
    memfd_create: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.i32 },
    fcntl: { args: [FFIType.i32, FFIType.i32, FFIType.i32], returns: FFIType.i32 },
  }).symbols;

/**
 * A new anonymous file in RAM (memfd_create), read and written like any fd: a copy kept in one can be
 * handed to the shim, which serves reads from it without JS. -1 when the kernel refuses one (out of
 * file descriptors or memory).
 */
export function createMemfd(): number {
  return (libc ??= load()).memfd_create(NAME, MFD_CLOEXEC | MFD_ALLOW_SEALING);
}

/** Make a memfd's bytes final: no fd of it can write, grow or shrink it any more (false if refused). */
export function sealMemfd(fd: number): boolean {
  return (libc ??= load()).fcntl(fd, F_ADD_SEALS, F_SEAL_WRITE | F_SEAL_GROW | F_SEAL_SHRINK | F_SEAL_SEAL) === 0;
}

/** The file of fd opened again, read-only: whoever reads a copy still being written through it cannot write it. */
export function readOnlyFd(fd: number): number {
  try {
    return fs.openSync(`/proc/self/fd/${fd}`, fs.constants.O_RDONLY);
  } catch (e) {
    throw new FsError(toErrno(e), `opening a copy again to read it: ${(e as Error).message}`);
  }
}

/** Another fd of the same open file (close-on-exec), the caller's own: EMFILE when out of file descriptors. */
export function dupFd(fd: number): number {
  const d = (libc ??= load()).fcntl(fd, F_DUPFD_CLOEXEC, 0);
  if (d < 0) throw new FsError(E.EMFILE, "no file descriptor left for another reader of a copy");
  return d;
}
