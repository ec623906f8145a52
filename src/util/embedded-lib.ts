import { dlopen, FFIType, type FFIFunction } from "bun:ffi";
import { cstr } from "./c-string.ts";
import { closeSync, readFileSync, writeSync } from "node:fs";

/**
 * A file embedded in the binary, in a memfd (its descriptor; the caller closes it). Bun would unpack
 * it to $TMPDIR, which is noexec in many pods.
 */
export function embeddedFd(path: string, name: string): number {
  const bytes = readFileSync(path);
  const libc = dlopen("libc.so.6", { memfd_create: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.i32 } });
  const fd = libc.symbols.memfd_create(cstr(name), 0);
  libc.close();
  if (fd < 0) throw new Error(`memfd_create failed: cannot load ${name}`);
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off);
    return fd;
  } catch (e) {
    closeSync(fd);
    throw e;
  }
}

/** dlopen a shared library embedded in the binary, from /proc/self/fd/N (see embeddedFd). */
export function loadEmbedded<Fns extends Record<string, FFIFunction>>(path: string, name: string, symbols: Fns) {
  const fd = embeddedFd(path, name);
  try {
    return dlopen(`/proc/self/fd/${fd}`, symbols).symbols;
  } finally {
    closeSync(fd);
  }
}
