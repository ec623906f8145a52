import { dlopen, FFIType, type FFIFunction } from "bun:ffi";
import { cstr } from "./c-string.ts";
import { closeSync, readFileSync, writeSync } from "node:fs";

/**
 * dlopen a shared library embedded in the binary. Bun would unpack it to $TMPDIR, which is noexec in
 * many pods, so its bytes go into a memfd and are loaded from /proc/self/fd/N instead.
 */
export function loadEmbedded<Fns extends Record<string, FFIFunction>>(path: string, name: string, symbols: Fns) {
  const bytes = readFileSync(path);
  const libc = dlopen("libc.so.6", { memfd_create: { args: [FFIType.ptr, FFIType.u32], returns: FFIType.i32 } });
  const fd = libc.symbols.memfd_create(cstr(name), 0);
  libc.close();
  if (fd < 0) throw new Error(`memfd_create failed: cannot load ${name}`);
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off);
    return dlopen(`/proc/self/fd/${fd}`, symbols).symbols;
  } finally {
    closeSync(fd);
  }
}
