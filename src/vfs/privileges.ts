import * as fs from "node:fs";
import type { Caller } from "../fuse/types.ts";
import { isReg, S_ISGID, S_ISUID, S_IXGRP } from "../util/file-mode.ts";

/** CAP_FSETID's bit in a process's capability sets. */
const CAP_FSETID = 4n;

/**
 * The mode of a regular file once a change by someone without CAP_FSETID has taken its privileges:
 * setuid, and setgid where the group may execute (setgid without it marks mandatory locking, not a
 * privilege). undefined: it has none to take.
 */
export function withoutPrivileges(mode: number): number | undefined {
  if (!isReg(mode)) return undefined;
  const kill = (mode & S_ISUID) | ((mode & (S_ISGID | S_IXGRP)) === (S_ISGID | S_IXGRP) ? S_ISGID : 0);
  return kill ? mode & ~kill : undefined;
}

/**
 * Whether the caller may keep a file's privileges through a change (CAP_FSETID in its effective set),
 * read from /proc as the kernel decides it; a process gone meanwhile keeps nothing.
 */
export function mayKeepPrivileges(c: Caller, procRoot = "/proc"): boolean {
  try {
    const line = fs.readFileSync(`${procRoot}/${c.pid}/status`, "utf8").split("\n").find((l) => l.startsWith("CapEff:"));
    return line !== undefined && ((BigInt(`0x${line.slice(7).trim()}`) >> CAP_FSETID) & 1n) === 1n;
  } catch {
    return false;
  }
}
