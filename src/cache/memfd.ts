import { dlopen, FFIType, ptr } from "bun:ffi";

const MFD_CLOEXEC = 1;
const NAME = Buffer.from("mcfs-copy\0");

let libc: ReturnType<typeof load> | undefined;
const load = () => dlopen("libc.so.6", { memfd_create: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.i32 } }).symbols;

/**
 * A new anonymous file in RAM (memfd_create), read and written like any fd: a copy kept in one can be
 * handed to the shim, which serves reads from it without JS. -1 when the kernel refuses one (out of
 * file descriptors or memory).
 */
export function createMemfd(): number {
  return (libc ??= load()).memfd_create(ptr(NAME), MFD_CLOEXEC);
}
