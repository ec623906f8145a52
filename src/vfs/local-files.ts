/**
 * The node's local copies under its root path: creating, replacing and removing them. The namespace in
 * Redis is authoritative, so a leftover that it no longer knows is replaced, and missing parent
 * directories (made on another node) are created on demand.
 */
import * as fs from "node:fs";
import { dirname } from "node:path";

const { O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;

export function removeLocal(p: string): void {
  try {
    const st = fs.lstatSync(p);
    if (st.isDirectory()) fs.rmSync(p, { recursive: true, force: true });
    else fs.unlinkSync(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}

/** Run a local filesystem call, creating missing parent directories once (made on another node). */
export function withParents<T>(p: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
    fs.mkdirSync(dirname(p), { recursive: true });
    return fn();
  }
}

/**
 * Make a new local object at p (file, link, ...), replacing a stale leftover there that the namespace
 * no longer knows, and creating missing parent directories.
 */
export function makeLocal<T>(p: string, make: () => T): T {
  return withParents(p, () => {
    try {
      return make();
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      removeLocal(p);
      return make();
    }
  });
}

/** Create the backing file for a new inode. */
export function createLocalFile(p: string, flags: number, mode: number, uid: number, gid: number): number {
  const fd = makeLocal(p, () => fs.openSync(p, flags | O_CREAT | O_EXCL | O_NOFOLLOW, mode & 0o7777));
  fs.fchownSync(fd, uid, gid);
  // open() applies the umask of the daemon; the kernel already applied the caller's.
  fs.fchmodSync(fd, mode & 0o7777);
  return fd;
}

/** Apply a change to the local copy at p; no local copy (ENOENT) is fine. */
export function applyLocal(p: string, fn: (p: string) => void): void {
  try {
    fn(p);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") throw e;
  }
}
