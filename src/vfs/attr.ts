import type { Attr } from "../fuse/types.ts";
import type { Inode } from "../meta/store.ts";

export const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000, S_ISGID = 0o2000;

export const isDir = (mode: number) => (mode & S_IFMT) === S_IFDIR;
export const isReg = (mode: number) => (mode & S_IFMT) === S_IFREG;

export function attrOf(r: Inode): Attr {
  return {
    ino: r.ino, mode: r.mode, nlink: r.nlink, uid: r.uid, gid: r.gid, rdev: r.rdev,
    size: isDir(r.mode) ? 4096 : r.size, atime: r.atime, mtime: r.mtime, ctime: r.ctime,
  };
}
