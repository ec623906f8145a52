import { dlopen, FFIType, ptr } from "bun:ffi";

let libc: ReturnType<typeof open> | undefined;
function open() {
  return dlopen("libc.so.6", { memfd_create: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.i32 } });
}

/** An anonymous file in RAM (read and written like any fd, gone when its last fd closes). */
export function memfdCreate(name: string): number {
  libc ??= open();
  const fd = libc.symbols.memfd_create(ptr(Buffer.from(`${name}\0`)), 0);
  if (fd < 0) throw new Error(`memfd_create(${name}) failed`);
  return fd;
}
