const clockBase = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();

/** Wall-clock time in nanoseconds (ms-accurate, ns-resolution so successive changes stay ordered). */
export function nowNs(): bigint {
  return clockBase + process.hrtime.bigint();
}

/**
 * When a change stamped on disk at disk happened, given the last known change at known: the disk's
 * clock is the kernel's coarse one, up to a tick behind nowNs, so a change it stamps before the last
 * known one still comes after it.
 */
export function changeTime(disk: bigint, known: bigint): bigint {
  return disk > known ? disk : known + 1n;
}
