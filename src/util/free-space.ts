import { statfsSync } from "node:fs";

/** Bytes an unprivileged writer could still write on the filesystem holding path; undefined if it cannot be told. */
export function freeBytes(path: string): number | undefined {
  try {
    const st = statfsSync(path);
    return st.bavail * st.bsize;
  } catch {
    return undefined;
  }
}
