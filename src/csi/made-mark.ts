import { dlopen, FFIType, read } from "bun:ffi";
import { cstr } from "../util/c-string.ts";
import { errnoName } from "../util/errno.ts";

/**
 * Which target directories this driver made (and so may remove): an extended attribute on the
 * directory itself. It lives and dies with that inode, so a directory someone else puts at the same
 * path later is not ours; the trusted.* namespace takes CAP_SYS_ADMIN to set, so no pod can forge it;
 * and nothing is put inside the target, where the volume's files appear.
 */
const NAME = "trusted.csi.multicloud.fs.made";
const VALUE = Buffer.from("1");

let libc: ReturnType<typeof open> | undefined;
function open() {
  const { ptr: P, i32, i64, u64 } = FFIType;
  return dlopen("libc.so.6", {
    setxattr: { args: [P, P, P, u64, i32], returns: i32 },
    getxattr: { args: [P, P, P, u64], returns: i64 },
    __errno_location: { args: [], returns: P },
  });
}

/** Mark the directory at path (e.g. /proc/self/fd/N) as made by this driver. */
export function markMade(path: string): void {
  libc ??= open();
  if (libc.symbols.setxattr(cstr(path), cstr(NAME), VALUE, VALUE.length, 0) !== 0) {
    throw new Error(`marking ${path} as made by the driver: ${errnoName(read.i32(libc.symbols.__errno_location()!, 0))}`);
  }
}

/** Whether the directory at path carries the mark (a filesystem without xattrs: it does not). */
export function isMade(path: string): boolean {
  libc ??= open();
  const buf = Buffer.alloc(VALUE.length + 1);
  return Number(libc.symbols.getxattr(cstr(path), cstr(NAME), buf, buf.length)) === VALUE.length && buf.subarray(0, VALUE.length).equals(VALUE);
}
