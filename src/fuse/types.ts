/** File attributes as the kernel sees them. Times are nanoseconds since the epoch. */
export interface Attr {
  ino: number;
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  atime: bigint;
  mtime: bigint;
  ctime: bigint;
}

/** A local file's size and times (ns) as the shim found them at a flush or release. */
export interface SeenFile {
  size: number;
  mtimeNs: bigint;
  ctimeNs: bigint;
}

/** Who is asking: the calling process's credentials. */
export interface Caller {
  uid: number;
  gid: number;
  pid: number;
}

export interface OpenReply {
  fh: number;
  /** A local file descriptor holding the bytes: reads and writes are then served by the shim. */
  fd?: number;
  directIo?: boolean;
  keepCache?: boolean;
  /** Its flush must reach the filesystem even when nothing was written through it. */
  unpublished?: boolean;
  /**
   * Nothing to do at its closes: the kernel sends them no flush. A read-only open; or a writer whose
   * bytes fd serves on a node with flushNotes, whose written release is then a note in order as its
   * flush would have been.
   */
  noFlush?: boolean;
  /** A writer's: in passthrough, its writes go unseen, so each of its flushes and its release count as written. */
  writes?: boolean;
  /**
   * fd is this node's own file of the inode: the kernel may read and write it itself (FUSE
   * passthrough), unseen by the filesystem; each flush of a writer's handle then counts as written.
   */
  passthrough?: boolean;
  /**
   * No fd: the bytes are on their way into a copy. Called once the open is answered; listen then
   * hears a read-only fd of the copy and how many bytes from its start are there, again as more
   * arrive (whole: all of them), and the shim serves reads of those bytes from it.
   */
  follow?: (listen: (fd: number, bytes: number, whole: boolean) => void) => void;
}

export interface DirEntry {
  name: string;
  attr: Attr;
  /** Offset of the entry after this one. */
  next: number;
}

export interface StatFs {
  bsize: number; frsize: number; blocks: number; bfree: number; bavail: number;
  files: number; ffree: number; favail: number; namemax: number;
}

/** Which fields a setattr changes (FUSE_SET_ATTR_* bits decoded). */
export interface SetAttr {
  mode?: number;
  uid?: number;
  gid?: number;
  size?: number;
  /** "now" means the current time. */
  atime?: bigint | "now";
  mtime?: bigint | "now";
  ctime?: bigint;
  /** The caller lacks CAP_FSETID and cuts or extends the file: its setuid and setgid go (the kernel leaves that to mcfs). */
  killPrivileges?: true;
}

export const RENAME_NOREPLACE = 1;
export const RENAME_EXCHANGE = 2;

/**
 * A read's bytes that lie whole in a file: the binding sends them from the file's pages (no copy
 * through JS) and then closes fd, a descriptor of the reply's own.
 */
export interface FileSlice {
  fd: number;
  offset: number;
  length: number;
}

/**
 * Names the FUSE shim answers lookups of by itself, without a hop through the FileSystem
 * (native/entries.c): entries the FileSystem has at hand, with the attributes it would reply.
 */
export interface ShimEntries {
  /** Each name in parent is answered with its attributes for ttlMs. */
  keep(parent: number, named: [string, Attr][], ttlMs: number): void;
  /**
   * A getattr of each of these inodes is answered with these attributes for ttlMs (dropped with the
   * inode). They replace all that was kept of the inode, its names too, in one step (as dropInode then
   * keep would, with no getattr between them going to the FileSystem).
   */
  keepAttrs(attrs: Attr[], ttlMs: number): void;
  drop(parent: number, name: string): void;
  /** Every name of ino. */
  dropInode(ino: number): void;
  /** Every name in dir. */
  dropDir(dir: number): void;
  dropAll(): void;
  /**
   * dir's whole listing, for a FileSystem whose listings are complete (nobody else changes them, or
   * every change by others is heard before it returns, while trustFor holds): a lookup of any other
   * name in dir is answered ENOENT, until unlist. Each change of it must be told (listName) before
   * the request that made it is answered.
   */
  list(dir: number, names: Iterable<string>): void;
  /** A name came into (present) or left a listed directory. */
  listName(dir: number, name: string, present: boolean): void;
  unlist(dir: number): void;
  unlistAll(): void;
  /** A node of a cluster: its listings answer for the next ms only (0: not now). */
  trustFor(ms: number): void;
}

/** What the shim takes to make a file itself: the inode number, handle and identity mark it gets. */
export interface ShimKit {
  ino: number;
  fh: number;
  mark: string;
}

/**
 * Creates the FUSE shim answers itself (native/creates.c), for a FileSystem nobody else changes:
 * in listed directories (ShimEntries.list) it was given the local directory of, each with a kit.
 */
export interface ShimCreates {
  /** More kits; returns how many the shim holds now. */
  supply(kits: ShimKit[]): number;
  /**
   * New files in listed dir may be made in dirFd (its local directory; the shim owns it and closes it
   * with the listing), with the directory's mode and gid; dirFd -1: the mode and gid changed. made: a
   * file just made in dir (its name, open as fd), which dirFd must hold (it was opened by path, and dir
   * may have been renamed meanwhile). False (dirFd closed) when the shim has no listing of dir, or
   * dirFd does not hold that file.
   */
  makeHere(dir: number, dirFd: number, mode: number, gid: number, made?: { name: string; fd: number }): boolean;
  /** No more files made in dir by the shim (its fd closed); the listing stays. */
  elsewhere(dir: number): void;
}

/**
 * Read-only opens the FUSE shim answers itself (native/grants.c): of an inode granted, with a dup of
 * the fd granted, while ShimEntries.trustFor holds. A grant stands until revoked: revoke before
 * anything that would make an open of that inode read other bytes.
 */
export interface ShimGrants {
  /** Grants held at most: each holds a file descriptor of the process (never past abi.ts GRANTS_MAX). */
  readonly limit: number;
  /**
   * Opens of ino are answered with fd's bytes (the shim keeps a dup), told as grant id; false when the
   * shim holds too many. fresh: the kernel may hold pages of ino of another version; the opens answered
   * have it drop them until settle.
   */
  grant(ino: number, fd: number, id: number, version: number, size: number, copy: boolean, fresh?: boolean): boolean;
  /** The kernel holds no page of ino but of grant id's version (an open from it was answered and closed): its opens keep them. */
  settle(ino: number, id: number): void;
  /** Opens of ino come to the filesystem from now on; those answered before are taken in before any request after. */
  revoke(ino: number): void;
  clear(): void;
  /** Handle numbers for the opens answered there (one each). */
  supply(fhs: number[]): void;
}

/** A read-only open the shim answered from a grant: the handle it took, a dup of the granted fd, the grant's id, version, size and copy flag. */
export interface OpenedInShim {
  fh: number;
  fd: number;
  grant: number;
  version: number;
  size: number;
  copy: boolean;
}

/** A file the shim made and answered the create of (ShimCreates): from the kit it took, its local file open as fd. */
export interface MadeInShim {
  ino: number;
  fh: number;
  fd: number;
  mode: number;
  flags: number;
  gid: number;
  /** Its times, ns since the epoch. */
  time: bigint;
}

/**
 * What the FUSE binding asks of a filesystem. Each method resolves with its result or throws an
 * errno-carrying error; the binding replies exactly once either way.
 */
export interface FileSystem {
  lookup(c: Caller, parent: number, name: string): Promise<Attr>;
  getattr(c: Caller, ino: number, fh?: number): Promise<Attr>;
  setattr(c: Caller, ino: number, set: SetAttr, fh?: number): Promise<Attr>;
  readlink(c: Caller, ino: number): Promise<string>;
  mknod(c: Caller, parent: number, name: string, mode: number, rdev: number): Promise<Attr>;
  mkdir(c: Caller, parent: number, name: string, mode: number): Promise<Attr>;
  unlink(c: Caller, parent: number, name: string): Promise<void>;
  rmdir(c: Caller, parent: number, name: string): Promise<void>;
  symlink(c: Caller, parent: number, name: string, target: string): Promise<Attr>;
  rename(c: Caller, parent: number, name: string, newParent: number, newName: string, flags: number): Promise<void>;
  link(c: Caller, ino: number, newParent: number, newName: string): Promise<Attr>;
  open(c: Caller, ino: number, flags: number): Promise<OpenReply>;
  create(c: Caller, parent: number, name: string, mode: number, flags: number): Promise<{ attr: Attr; open: OpenReply }>;
  read(c: Caller, ino: number, fh: number, offset: number, size: number): Promise<Uint8Array | FileSlice>;
  /** killPrivileges: the file's setuid and setgid go first (the caller lacks CAP_FSETID). */
  write(c: Caller, ino: number, fh: number, offset: number, data: Uint8Array, killPrivileges?: boolean): Promise<number>;
  /** dirty: the shim wrote through this handle since the last flush. seen: the file as the shim found it then, if it looked. */
  flush(c: Caller, ino: number, fh: number, dirty: boolean, seen?: SeenFile): Promise<void>;
  release(c: Caller, ino: number, fh: number, dirty: boolean, seen?: SeenFile): Promise<void>;
  fsync(c: Caller, ino: number, fh: number, datasync: boolean, dirty: boolean): Promise<void>;
  opendir(c: Caller, ino: number): Promise<number>;
  /** Up to max entries starting at offset (0 = start). plus: attributes are needed too. */
  readdir(c: Caller, ino: number, fh: number, offset: number, max: number, plus: boolean): Promise<DirEntry[]>;
  releasedir(c: Caller, ino: number, fh: number): Promise<void>;
  statfs(c: Caller, ino: number): Promise<StatFs>;
  /** Before a fallocate through fh (the shim then does it): a caller without CAP_FSETID takes the file's privileges, as with a write. */
  fallocating(c: Caller, ino: number, fh: number): Promise<void>;
  setxattr(c: Caller, ino: number, name: string, value: Uint8Array, flags: number): Promise<void>;
  getxattr(c: Caller, ino: number, name: string): Promise<Uint8Array>;
  listxattr(c: Caller, ino: number): Promise<string[]>;
  removexattr(c: Caller, ino: number, name: string): Promise<void>;
  access(c: Caller, ino: number, mask: number): Promise<void>;
  /** A file the shim made (ShimCreates): taken in before any other request, the kernel has it already. */
  created?(c: Caller, parent: number, name: string, made: MadeInShim): Promise<void>;
  /** A read-only open the shim answered from a grant (ShimGrants): taken in at once, the kernel has the handle already. */
  opened?(c: Caller, ino: number, o: OpenedInShim): void;
}
