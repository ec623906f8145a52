import * as fs from "node:fs";
import type { Caller } from "../fuse/types.ts";
import { isReg, S_ISGID, S_ISUID, S_IXGRP } from "../util/file-mode.ts";

/** CAP_FSETID's bit in a process's capability sets. */
const CAP_FSETID = 4n;

/**
 * The mode of a regular file once a change has taken its privileges, as Linux takes them: setuid,
 * and setgid where the group may execute, or where the one changing it is an outsider (not in the
 * file's group, nor holding CAP_FSETID: asked only for a file with setgid and no group execute).
 * undefined: it has none to take.
 */
export function withoutPrivileges(mode: number, outsider: () => boolean = () => false): number | undefined {
  if (!isReg(mode)) return undefined;
  const kill = (mode & S_ISUID) | (mode & S_ISGID && (mode & S_IXGRP || outsider()) ? S_ISGID : 0);
  return kill ? mode & ~kill : undefined;
}

/** Whether caller c is outside group gid: neither its group nor a supplementary one (read from /proc; a caller gone is outside). */
export function outsideGroup(c: Caller, gid: number, procRoot = "/proc"): boolean {
  if (c.gid === gid) return false;
  try {
    const line = fs.readFileSync(`${procRoot}/${c.pid}/status`, "utf8").split("\n").find((l) => l.startsWith("Groups:"));
    return !(line?.slice(7).split(/\s+/).filter(Boolean).map(Number) ?? []).includes(gid);
  } catch {
    return true;
  }
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
