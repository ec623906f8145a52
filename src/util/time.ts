const clockBase = BigInt(Date.now()) * 1_000_000n - process.hrtime.bigint();

/** Wall-clock time in nanoseconds (ms-accurate, ns-resolution so successive changes stay ordered). */
export function nowNs(): bigint {
  return clockBase + process.hrtime.bigint();
}
