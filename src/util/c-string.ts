/**
 * A NUL-terminated copy of s for a C call. Passed to a bun:ffi pointer argument as it is (never through
 * ptr()): Bun takes its address at the call, and the Buffer lives through it. A bare address of a
 * temporary lets the next allocation before the call (another argument's copy) collect it, and C read
 * freed memory: a path made of garbage.
 */
export const cstr = (s: string) => Buffer.from(`${s}\0`);
