import type { Attr } from "../fuse/types.ts";
import type { Inode } from "../meta/store.ts";

import { isDir } from "../util/file-mode.ts";

export { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_ISGID, isDir, isReg } from "../util/file-mode.ts";

/**
 * Whether r may answer for the name parent/name from what is held: a file of one name only under the
 * name its record has (a listing can be behind a rename read since), others under any.
 */
export const answersFor = (r: Inode, parent: number, name: string): boolean => r.nlink !== 1 || (r.parent === parent && r.name === name);

/** A directory's record r, once another node added a name in it: its times and link count then (Invalidation.touched). */
export const withNameAdded = (r: Inode, ctime: bigint, nlink: number): Inode => ({ ...r, mtime: ctime, ctime, nlink });

export function attrOf(r: Inode): Attr {
  return {
    ino: r.ino, mode: r.mode, nlink: r.nlink, uid: r.uid, gid: r.gid, rdev: r.rdev,
    size: isDir(r.mode) ? 4096 : r.size, atime: r.atime, mtime: r.mtime, ctime: r.ctime,
  };
}
