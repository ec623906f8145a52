import { dlopen, FFIType, ptr } from "bun:ffi";

const CLOCK_REALTIME = 0;
const libc = dlopen("libc.so.6", { clock_gettime: { args: [FFIType.i32, FFIType.ptr], returns: FFIType.i32 } }).symbols;
const spec = new BigInt64Array(2);
const specPtr = ptr(spec);
let last = 0n;

/**
 * Wall-clock time in nanoseconds, read from the kernel's own clock: the kernel stamps a backing
 * file's ctime from it, and a change stamped after must never look older (a base taken once from
 * Date.now() was up to 1.5 ms behind). Strictly increasing, so successive changes stay ordered
 * when the clock steps back.
 */
export function nowNs(): bigint {
  libc.clock_gettime(CLOCK_REALTIME, specPtr);
  const t = spec[0]! * 1_000_000_000n + spec[1]!;
  last = t > last ? t : last + 1n;
  return last;
}

/**
 * When a change stamped on disk at disk happened, given the last known change at known: the disk's
 * clock is the kernel's coarse one, up to a tick behind nowNs, so a change it stamps before the last
 * known one still comes after it.
 */
export function changeTime(disk: bigint, known: bigint): bigint {
  return disk > known ? disk : known + 1n;
}
