import * as fs from "node:fs";
import type { LocalDir } from "../local/local-dir.ts";
import { dirIdentity, inoOfIdentity } from "../meta/store.ts";
import { E, errnoOf } from "../util/errno.ts";

const { O_RDONLY, O_DIRECTORY } = fs.constants;

/**
 * What is at a path of this node's disk for a directory of the namespace: its own local directory
 * (or one with no mark: made before marks, or by a move's parents), nothing yet, or another
 * directory's (the path was read from caches behind or ahead of the disk).
 */
export type LocalDirState = "ok" | "absent" | "other";

/**
 * Identity marks on the local directories this node makes for namespace directories, so that a file
 * made by a path is made in the right one: a directory's path read from a record fetched before a
 * move this disk has made since would name the directory that took its place.
 */
export interface DirMarks {
  /** The local directory at p, for directory ino. Looked at once per directory and path between two moves here. */
  check(p: string, ino: number): LocalDirState;
  /** The local directory at p is ino's (just made there, by a path checked against the disk). */
  mark(p: string, ino: number): void;
  /** Directories were moved on this disk: every one is looked at again. */
  moved(): void;
}

/** fn with an fd of the local directory at p; throws (ENOENT, ENOTDIR, ELOOP) if none is there. */
function atDir<T>(root: LocalDir, p: string, fn: (fd: number) => T): T {
  const fd = root.open(p, O_RDONLY | O_DIRECTORY);
  try {
    return fn(fd);
  } finally {
    fs.closeSync(fd);
  }
}

/** The identity mark of the local directory at p; undefined if it has none; throws (ENOENT, ENOTDIR, ELOOP) if none is there. */
export const dirMarkAt = (root: LocalDir, p: string): string | undefined => atDir(root, p, (fd) => root.readIdentity(fd));

export function createDirMarks(root: LocalDir): DirMarks {
  /** Directories seen at a path, with the count of moves then. */
  const seen = new Map<number, { at: string; moves: number }>();
  let moves = 0;

  function check(p: string, ino: number): LocalDirState {
    const was = seen.get(ino);
    if (was?.moves === moves && was.at === p) return "ok";
    let mark: string | undefined;
    try {
      mark = dirMarkAt(root, p);
    } catch (e) {
      // Something else there is cleared by the create's parents (ensureDir), as before marks.
      if (errnoOf(e) === E.ENOENT || errnoOf(e) === E.ENOTDIR || errnoOf(e) === E.ELOOP) return "absent";
      throw e;
    }
    if (mark !== undefined && inoOfIdentity(mark) !== ino) return "other";
    if (seen.size >= 100_000) seen.clear();
    seen.set(ino, { at: p, moves });
    return "ok";
  }

  return {
    check,
    mark(p, ino) {
      try {
        atDir(root, p, (fd) => root.markIdentity(fd, dirIdentity(ino)));
      } catch {
        return;
      }
      seen.set(ino, { at: p, moves });
    },
    moved() {
      moves++;
    },
  };
}
