/**
 * A warning at most every few seconds, with how many were held back: a flood of refused callers
 * must not become a flood of log lines.
 */
export function everyFewSeconds<A extends unknown[]>(warn: (heldBack: number, ...a: A) => void, intervalMs = 5000): (...a: A) => void {
  let last = 0;
  let heldBack = 0;
  return (...a) => {
    const now = Date.now();
    if (now - last < intervalMs) {
      heldBack++;
      return;
    }
    warn(heldBack, ...a);
    last = now;
    heldBack = 0;
  };
}
