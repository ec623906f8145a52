import { readFileSync } from "node:fs";

/** Linux's default soft limit, assumed where /proc does not say. */
const FALLBACK = 1024;

/** How many files this process may have open at once (its soft RLIMIT_NOFILE, which Bun raises to the hard one at start). */
export function openFileLimit(): number {
  try {
    const m = /^Max open files\s+(\d+|unlimited)/m.exec(readFileSync("/proc/self/limits", "utf8"));
    if (m) return m[1] === "unlimited" ? Number.MAX_SAFE_INTEGER : Number(m[1]);
  } catch {
    // No /proc: the fallback.
  }
  return FALLBACK;
}
