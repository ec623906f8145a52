import type { Attr } from "../fuse/types.ts";
import type { Inode } from "../meta/store.ts";

import { isDir } from "../util/file-mode.ts";

export { S_IFMT, S_IFDIR, S_IFREG, S_IFLNK, S_ISGID, isDir, isReg } from "../util/file-mode.ts";

export function attrOf(r: Inode): Attr {
  return {
    ino: r.ino, mode: r.mode, nlink: r.nlink, uid: r.uid, gid: r.gid, rdev: r.rdev,
    size: isDir(r.mode) ? 4096 : r.size, atime: r.atime, mtime: r.mtime, ctime: r.ctime,
  };
}
