/**
 * The node's local copies under its root path: creating, replacing and removing them, always through
 * the confined LocalDir. The namespace in Redis is authoritative, so a leftover that it no longer
 * knows is replaced, and missing parent directories (made on another node) are created on demand.
 */
import * as fs from "node:fs";
import { dirname } from "node:path";
import type { FileOwner, LocalDir } from "../local/local-dir.ts";
import { E, FsError, errnoOf } from "../util/errno.ts";
import { fileIdentity, inoOfIdentity, type MetadataStore } from "../meta/store.ts";
import { createPathCache } from "./paths.ts";
import { RENAME_EXCHANGE } from "../fuse/types.ts";
import type { Logger } from "../util/log.ts";

const { O_CREAT, O_EXCL } = fs.constants;

/** The way to p is missing or not a directory (a leftover, or made on another node). */
const noParent = (e: unknown) => {
  const n = errnoOf(e);
  return n === E.ENOENT || n === E.ENOTDIR || n === E.ELOOP;
};

/** Run a local filesystem call, making p's parent directories once if they are not there as directories. */
export function withParents<T>(root: LocalDir, p: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    if (!noParent(e)) throw e;
    root.ensureDir(dirname(p));
    return fn();
  }
}

/** Something at p the namespace does not have is in the way. */
const inTheWay = (e: unknown) => {
  const n = errnoOf(e);
  return n === E.EEXIST || n === E.ENOTEMPTY || n === E.EISDIR || n === E.ENOTDIR;
};

/**
 * Remove what is at p to make way for what the namespace has there now: never a directory with
 * anything in it, whose files may be live ones put there by a path read before a rename (removed,
 * their bytes would be gone). That is refused, and left for the start-up scan.
 */
export function clearWay(root: LocalDir, p: string): void {
  if (root.typeOf(p) !== "dir") return root.remove(p);
  try {
    root.rmdir(p);
  } catch (e) {
    if (errnoOf(e) === E.ENOENT) return;
    if (errnoOf(e) === E.ENOTEMPTY) throw new FsError(E.EIO, `a directory with files in it is in the way at ${p}: left as it is`);
    throw e;
  }
}

/**
 * Where the namespace has the file marked id now (its identity, "ino:gen"), if it still has that file:
 * for telling a live file from a leftover.
 */
export type LiveAt = (id: string) => Promise<string | undefined>;

/** LiveAt as store has it (each path read afresh: names change under a long-lived cache). */
export function liveIn(store: MetadataStore): LiveAt {
  return async (id) => {
    const ino = inoOfIdentity(id);
    if (!(ino > 1)) return undefined;
    const r = await store.get(ino).catch(() => undefined);
    if (!r || r.nlink === 0 || fileIdentity(r.ino, r.gen) !== id) return undefined;
    return createPathCache(store).childPath(r.parent, r.name).catch(() => undefined);
  };
}

/**
 * Remove the directory at p, which the namespace no longer has, with what is in it: leftovers go, but
 * a file the namespace has elsewhere (put here by a path read before a rename) moves where the
 * namespace has it. One that cannot is left, with the directory, for the start-up scan.
 */
export async function removeDir(root: LocalDir, p: string, liveAt: LiveAt, log: Logger): Promise<void> {
  if (root.typeOf(p) !== "dir") return clearWay(root, p);
  let kept = 0;
  for (const e of root.list(p)) {
    const at = `${p}/${e.name}`;
    if (e.type === "dir") {
      await removeDir(root, at, liveAt, log);
      if (root.typeOf(at) !== undefined) kept++;
      continue;
    }
    const id = e.type === "file" ? root.identityOf(at) : undefined;
    const where = id === undefined ? undefined : await liveAt(id);
    if (where === undefined) {
      root.remove(at);
      continue;
    }
    if (where === at) {
      kept++;
      continue;
    }
    try {
      if (root.typeOf(where) !== undefined) throw new FsError(E.EEXIST, `something is at ${where} already`);
      withParents(root, where, () => root.rename(at, where));
      log.warn({ path: at, movedTo: where, id }, "a file the namespace has elsewhere was in a directory removed: moved where the namespace has it");
    } catch (err) {
      kept++;
      log.error({ path: at, namespacePath: where, id, err: (err as Error).message }, "a file the namespace has elsewhere was in a directory removed: left there");
    }
  }
  if (!kept) root.rmdir(p);
}

/**
 * Make a new local object at p (file, link, ...), replacing a stale leftover there that the namespace
 * no longer knows (clearWay), and creating missing parent directories.
 */
export function makeLocal<T>(root: LocalDir, p: string, make: () => T): T {
  return withParents(root, p, () => {
    try {
      return make();
    } catch (e) {
      if (!inTheWay(e)) throw e;
      clearWay(root, p);
      return make();
    }
  });
}

/**
 * One more local name for the bytes at from (a hard link), replacing a stale leftover at to; the
 * namespace has the name already, so a failure is only logged.
 */
export function linkLocal(root: LocalDir, from: string, to: string, log: Logger): void {
  try {
    makeLocal(root, to, () => root.link(from, to));
  } catch (e) {
    log.warn({ from, to, err: (e as Error).message }, "could not link a local copy under a new name");
  }
}

/** The inode a kept file holds the bytes of: its owner, mode and identity. */
export interface KeptFile {
  ino: number;
  gen: string;
  mode: number;
  uid: number;
  gid: number;
}

const ownerOf = (f: KeptFile): FileOwner => ({ uid: f.uid, gid: f.gid, id: fileIdentity(f.ino, f.gen) });

/** Give a kept file (open as fd) its inode's owner, mode and identity mark. */
export function keep(root: LocalDir, fd: number, f: KeptFile): void {
  root.keepAs(fd, f.mode, ownerOf(f));
}

/**
 * make(), which puts ino's file at p in place of whatever is there, unless that is another file the
 * namespace has at p now: one a rename on this node moved onto the name after ino's path was read,
 * whose bytes would go (ESTALE then: the kernel looks the name up again). Nothing there, ino's own
 * file, an unmarked one or a leftover gives way. What is at p is looked at again just before make,
 * with no await between: a rename landing during the check is seen.
 */
export async function replacingStale<T>(root: LocalDir, p: string, ino: number, liveAt: LiveAt, make: () => T): Promise<T> {
  for (;;) {
    const there = root.identityOf(p);
    if (there === undefined || inoOfIdentity(there) === ino) return make();
    if ((await liveAt(there)) === p) throw new FsError(E.ESTALE, `${p} names another file than inode ${ino} now`);
    if (root.identityOf(p) === there) return make();
  }
}

/** Create the backing file for an inode. */
export function createLocalFile(root: LocalDir, p: string, flags: number, f: KeptFile): number {
  const fd = makeLocal(root, p, () => root.openFile(p, flags | O_CREAT | O_EXCL, f.mode & 0o7777));
  try {
    keep(root, fd, f);
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
  return fd;
}

/** createLocalFile, made and kept on the open threads; what is in the way (a leftover, missing parents) is cleared here. */
export async function createLocalFileAsync(root: LocalDir, p: string, flags: number, f: KeptFile): Promise<number> {
  try {
    return await root.openFileAsync(p, flags | O_CREAT | O_EXCL, f.mode & 0o7777, ownerOf(f));
  } catch (e) {
    if (!noParent(e) && !inTheWay(e)) throw e;
    return createLocalFile(root, p, flags, f);
  }
}

/** The local side of RENAME_EXCHANGE: swap what is there, or move the one that is. */
export function exchangeLocal(root: LocalDir, a: string, b: string): void {
  const hasA = root.typeOf(a) !== undefined, hasB = root.typeOf(b) !== undefined;
  if (hasA && hasB) root.rename(a, b, RENAME_EXCHANGE);
  else if (hasA) makeLocal(root, b, () => root.rename(a, b));
  else if (hasB) makeLocal(root, a, () => root.rename(b, a));
}

/** Apply a change to the local copy at p; no local copy (nothing reachable there) is fine. */
export function applyLocal(fn: () => void): void {
  try {
    fn();
  } catch (e) {
    if (!noParent(e)) throw e;
  }
}
