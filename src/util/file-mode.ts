/** File-type bits of st_mode and the open flags Node does not export: defined here only. */
export const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFREG = 0o100000, S_IFLNK = 0o120000, S_ISUID = 0o4000, S_ISGID = 0o2000, S_IXGRP = 0o010;
/** Linux's O_PATH: a descriptor that names a file without opening it for I/O. */
export const O_PATH = 0o10000000;

export const isDir = (mode: number) => (mode & S_IFMT) === S_IFDIR;
export const isReg = (mode: number) => (mode & S_IFMT) === S_IFREG;
export const isLink = (mode: number) => (mode & S_IFMT) === S_IFLNK;
