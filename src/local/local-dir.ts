import * as fs from "node:fs";
import { O_PATH, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from "../util/file-mode.ts";
import { beneath } from "./beneath-native.ts";
import { cstr } from "../util/c-string.ts";
import { filePool } from "./file-pool.ts";
import { E, FsError, errnoName } from "../util/errno.ts";

const { O_RDONLY, O_WRONLY, O_DIRECTORY, O_NOFOLLOW, O_NONBLOCK, O_NOCTTY, O_CREAT, O_EXCL } = fs.constants;
const AT_REMOVEDIR = 0x200;
/** Extended attribute with the identity of the inode a kept file holds (trusted.*: root alone sees it). */
export const IDENTITY = "trusted.mcfs.id";
/** What native/beneath.c answers for "not a regular file" (Node's errno table lacks it). */
const EUCLEAN = 117;

export type EntryType = "file" | "dir" | "link" | "other";

/** Whose a file mcfs keeps for an inode is: the owner, and the identity mark ("ino:gen", see markIdentity). */
export interface FileOwner {
  uid: number;
  gid: number;
  id: string;
}

/**
 * A directory tree the daemon keeps (a root path, a cache dir), reached only beneath an fd of its top:
 * no path leaves it and no symlink in it is ever followed, not even as the last component. Paths are
 * namespace-style ("/a/b", "" for the top) and must be clean (no ".", "..", empty parts or NUL).
 * Failures throw FsError with the errno and the operation and path in the message.
 */
export interface LocalDir {
  /** Where it is, for messages. */
  readonly path: string;
  /** Open a file (never a symlink); O_CREAT makes it with mode. */
  open(p: string, flags: number, mode?: number): number;
  /** Open a regular file for its bytes; anything else at p is refused (EIO), never used. */
  openFile(p: string, flags: number, mode?: number): number;
  /**
   * openFile on another thread: the JS thread goes on meanwhile (an open may wait on a lock or the
   * disk). owner: a new file is given it there too, as keepAs would.
   */
  openFileAsync(p: string, flags: number, mode?: number, owner?: FileOwner): Promise<number>;
  /** lstat; undefined when nothing is there (or the way there is not a directory). */
  stat(p: string): fs.BigIntStats | undefined;
  /** Where the open file fd is now beneath the top (moved since it was opened), if it has a name there. */
  whereIs(fd: number): string | undefined;
  typeOf(p: string): EntryType | undefined;
  mkdir(p: string, mode: number): void;
  /** p and its missing parents as directories; a non-directory in the way (a leftover the namespace no longer has) is replaced. */
  ensureDir(p: string): void;
  unlink(p: string): void;
  rmdir(p: string): void;
  /** Whatever is at p, a directory with its contents; nothing there is fine. */
  remove(p: string): void;
  /** remove, a file's unlink made on another thread (freeing a big file's blocks can take the disk a while). */
  removeAsync(p: string): Promise<void>;
  rename(from: string, to: string, flags?: number): void;
  symlink(target: string, p: string): void;
  link(from: string, to: string): void;
  readlink(p: string): string;
  /** lchown: a symlink's own owner. */
  chown(p: string, uid: number, gid: number): void;
  /** chmod of a file or directory (symlinks have no mode of their own: EOPNOTSUPP). */
  chmod(p: string, mode: number): void;
  /** Times in ns since the epoch; a symlink's own. */
  utimes(p: string, atimeNs: bigint, mtimeNs: bigint): void;
  truncate(p: string, size: number): void;
  /**
   * Mark a file mcfs keeps with the identity of the inode whose bytes it holds ("ino:gen"), so that a
   * later change meant for that inode applies to this file only. Best effort: a filesystem without
   * extended attributes keeps no mark.
   */
  markIdentity(fd: number, id: string): void;
  /** Give an open file mcfs keeps its owner, its mode (open applied the daemon's umask) and its identity mark. */
  keepAs(fd: number, mode: number, owner: FileOwner): void;
  /** The identity a file at p was marked with, if any. */
  identityOf(p: string): string | undefined;
  /** The identity the open file fd was marked with, if any. */
  readIdentity(fd: number): string | undefined;
  list(p: string): { name: string; type: EntryType }[];
  close(): void;
}

/** Whether the file open as fd holds ino's bytes, by its identity mark ("ino:gen"); an unmarked file is taken at its word. */
export function holdsBytesOf(dir: LocalDir, fd: number, ino: number): boolean {
  const mark = dir.readIdentity(fd);
  return mark === undefined || mark.startsWith(`${ino}:`);
}

const typeOfMode = (mode: number): EntryType => {
  switch (mode & S_IFMT) {
    case S_IFREG: return "file";
    case S_IFDIR: return "dir";
    case S_IFLNK: return "link";
    default: return "other";
  }
};

/** The relative form of a clean namespace path ("." for the top); anything unclean is refused. */
export function relOf(p: string): string {
  if (p === "" || p === "/") return ".";
  if (p.includes("\0")) throw new FsError(E.EINVAL, `path with NUL refused`);
  const rel = p.startsWith("/") ? p.slice(1) : p;
  for (const part of rel.split("/")) if (part === "" || part === "." || part === "..") throw new FsError(E.EINVAL, `unclean path ${JSON.stringify(p)} refused`);
  return rel;
}

const secondsOf = (t: bigint) => t / 1_000_000_000n;
const nanosOf = (t: bigint) => t % 1_000_000_000n;

/** Set the times of the file fd holds (it may have no name left), to the nanosecond. */
export function futimes(fd: number, atimeNs: bigint, mtimeNs: bigint): void {
  const rc = beneath().mcfs_futimens(fd, secondsOf(atimeNs), nanosOf(atimeNs), secondsOf(mtimeNs), nanosOf(mtimeNs));
  if (rc < 0) throw new FsError(-rc, `futimens on fd ${fd}: ${errnoName(-rc)}`);
}

/** Open top (followed as given: it is the administrator's choice) and confine everything to it. */
export function openLocalDir(top: string): LocalDir {
  const lib = beneath();
  // -1 once closed: a call after close gets EBADF, never a directory that took the number since.
  let rootFd = lib.mcfs_open_root(cstr(top));
  if (rootFd < 0) throw new FsError(-rootFd, `cannot open ${top}: ${errnoName(-rootFd)}`);
  const fail = (rc: number, op: string, p: string) => new FsError(-rc, `${op} ${top}${p.startsWith("/") ? "" : "/"}${p}: ${errnoName(-rc)}`);
  const check = (rc: number, op: string, p: string): number => {
    if (rc < 0) throw fail(rc, op, p);
    return rc;
  };

  /** Calls on the pool's threads not yet answered, and whether close was asked meanwhile (rootFd is closed after the last). */
  let queued = 0;
  let closing = false;
  const closeRoot = () => {
    const fd = rootFd;
    rootFd = -1;
    fs.closeSync(fd);
  };
  /** A call on the pool's threads, rootFd kept open until it is done; refused once close was asked. */
  async function pooled(p: string, call: (rel: string) => Promise<number>): Promise<number> {
    const rel = relOf(p);
    if (closing) return -E.EBADF;
    queued++;
    try {
      return await call(rel);
    } finally {
      if (--queued === 0 && closing) closeRoot();
    }
  }
  const regular = (rc: number, p: string) => {
    if (rc === -EUCLEAN) throw new FsError(E.EIO, `${top}${p} is not a regular file: not used`);
    return check(rc, "open", p);
  };

  const open = (p: string, flags: number, mode = 0) => check(lib.mcfs_openat_beneath(rootFd, cstr(relOf(p)), flags | O_NOFOLLOW, mode), "open", p);

  function stat(p: string): fs.BigIntStats | undefined {
    const rc = lib.mcfs_openat_beneath(rootFd, cstr(relOf(p)), O_PATH | O_NOFOLLOW, 0);
    // A parent that is a symlink or a file: nothing reachable is at p.
    if (rc === -E.ENOENT || rc === -E.ENOTDIR || rc === -E.ELOOP) return undefined;
    const fd = check(rc, "lstat", p);
    try {
      return fs.fstatSync(fd, { bigint: true });
    } finally {
      fs.closeSync(fd);
    }
  }
  const typeOf = (p: string) => {
    const st = stat(p);
    return st ? typeOfMode(Number(st.mode)) : undefined;
  };

  const mkdir = (p: string, mode: number) => void check(lib.mcfs_mkdirat_beneath(rootFd, cstr(relOf(p)), mode), "mkdir", p);
  const unlink = (p: string) => void check(lib.mcfs_unlinkat_beneath(rootFd, cstr(relOf(p)), 0), "unlink", p);
  const rmdir = (p: string) => void check(lib.mcfs_unlinkat_beneath(rootFd, cstr(relOf(p)), AT_REMOVEDIR), "rmdir", p);

  function list(p: string): { name: string; type: EntryType }[] {
    const fd = open(p, O_RDONLY | O_DIRECTORY);
    try {
      // The fd is the directory itself, already confined: listing it through /proc follows nothing else.
      return fs.readdirSync(`/proc/self/fd/${fd}`, { withFileTypes: true }).map((d) => ({
        name: d.name,
        type: d.isFile() ? "file" : d.isDirectory() ? "dir" : d.isSymbolicLink() ? "link" : "other",
      }));
    } finally {
      fs.closeSync(fd);
    }
  }

  function remove(p: string): void {
    const t = typeOf(p);
    if (t === undefined) return;
    if (t !== "dir") return unlink(p);
    for (const e of list(p)) remove(`${p}/${e.name}`);
    rmdir(p);
  }

  function ensureDir(p: string): void {
    if (typeOf(p) === "dir") return;
    let at = "";
    for (const part of relOf(p).split("/")) {
      at += `/${part}`;
      const t = typeOf(at);
      if (t === "dir") continue;
      if (t !== undefined) remove(at);
      try {
        mkdir(at, 0o755);
      } catch (e) {
        if (!(e instanceof FsError && e.errno === E.EEXIST)) throw e;
      }
    }
  }

  /** The top's own path as the kernel names it (what /proc shows of the fds beneath it). */
  let topSeen: string | undefined;

  const dir: LocalDir = {
    path: top,
    whereIs(fd) {
      let at: string;
      try {
        topSeen ??= fs.readlinkSync(`/proc/self/fd/${rootFd}`);
        at = fs.readlinkSync(`/proc/self/fd/${fd}`);
      } catch {
        return undefined;
      }
      if (!at.startsWith(`${topSeen}/`)) return undefined;
      // The name /proc gives is a hint (an unlinked file's ends in " (deleted)"): the file there must be fd's.
      const p = at.slice(topSeen.length);
      try {
        const there = stat(p);
        const st = fs.fstatSync(fd, { bigint: true });
        return there && there.ino === st.ino && there.dev === st.dev ? p : undefined;
      } catch {
        return undefined;
      }
    },
    open,
    openFile: (p, flags, mode = 0) => regular(lib.mcfs_open_regular_beneath(rootFd, cstr(relOf(p)), flags, mode), p),
    async openFileAsync(p, flags, mode = 0, owner) {
      // Resolved from the kernel's caches alone, it cannot wait: here, without two thread hand-offs.
      const rc = owner ? -E.EAGAIN : lib.mcfs_open_cached_beneath(rootFd, cstr(relOf(p)), flags);
      if (rc !== -E.EAGAIN) return regular(rc, p);
      return regular(await pooled(p, (rel) => filePool().open(rootFd, rel, flags, mode, owner && { uid: owner.uid, gid: owner.gid, markName: IDENTITY, mark: owner.id })), p);
    },
    async removeAsync(p) {
      const rc = await pooled(p, (rel) => filePool().unlink(rootFd, rel));
      // Nothing there (or no way there): as remove. A directory: its contents go first, here.
      if (rc === -E.EISDIR) return remove(p);
      if (rc < 0 && rc !== -E.ENOENT && rc !== -E.ENOTDIR && rc !== -E.ELOOP) throw fail(rc, "unlink", p);
    },
    stat,
    typeOf,
    mkdir,
    ensureDir,
    unlink,
    rmdir,
    remove,
    rename: (from, to, flags = 0) => void check(lib.mcfs_renameat_beneath(rootFd, cstr(relOf(from)), cstr(relOf(to)), flags), "rename", `${from} -> ${to}`),
    symlink: (target, p) => void check(lib.mcfs_symlinkat_beneath(rootFd, cstr(target), cstr(relOf(p))), "symlink", p),
    link: (from, to) => void check(lib.mcfs_linkat_beneath(rootFd, cstr(relOf(from)), cstr(relOf(to))), "link", `${from} -> ${to}`),
    readlink(p) {
      const buf = Buffer.alloc(4096);
      const n = check(lib.mcfs_readlinkat_beneath(rootFd, cstr(relOf(p)), buf, buf.length), "readlink", p);
      return buf.toString("utf8", 0, n);
    },
    chown: (p, uid, gid) => void check(lib.mcfs_fchownat_beneath(rootFd, cstr(relOf(p)), uid >>> 0, gid >>> 0), "chown", p),
    chmod(p, mode) {
      const fd = open(p, O_RDONLY | O_NONBLOCK | O_NOCTTY);
      try {
        fs.fchmodSync(fd, mode & 0o7777);
      } finally {
        fs.closeSync(fd);
      }
    },
    utimes(p, at, mt) {
      check(lib.mcfs_utimensat_beneath(rootFd, cstr(relOf(p)), secondsOf(at), nanosOf(at), secondsOf(mt), nanosOf(mt)), "utimes", p);
    },
    truncate(p, size) {
      const fd = dir.openFile(p, O_WRONLY);
      try {
        fs.ftruncateSync(fd, size);
      } finally {
        fs.closeSync(fd);
      }
    },
    list,
    keepAs(fd, mode, owner) {
      const rc = lib.mcfs_keep_fd(fd, owner.uid >>> 0, owner.gid >>> 0, mode, cstr(IDENTITY), cstr(owner.id));
      if (rc < 0) throw new FsError(-rc, `giving a kept file under ${top} its owner and mode: ${errnoName(-rc)}`);
    },
    markIdentity(fd, id) {
      const v = Buffer.from(id);
      lib.mcfs_fsetxattr(fd, cstr(IDENTITY), v, v.length);
    },
    identityOf(p) {
      let fd: number;
      try {
        fd = dir.openFile(p, O_RDONLY);
      } catch {
        return undefined;
      }
      try {
        return dir.readIdentity(fd);
      } finally {
        fs.closeSync(fd);
      }
    },
    readIdentity(fd) {
      const buf = Buffer.alloc(64);
      const n = lib.mcfs_fgetxattr(fd, cstr(IDENTITY), buf, buf.length);
      return n > 0 ? buf.toString("utf8", 0, n) : undefined;
    },
    close() {
      if (closing) return;
      closing = true;
      if (queued === 0) closeRoot();
    },
  };
  return dir;
}

/** Open flags for a new file: created here or refused, never an existing entry reused. */
export const CREATE_NEW = O_CREAT | O_EXCL;
