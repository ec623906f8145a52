/**
 * The one description of what crosses between the FUSE shim (native/*.c) and JS: the queued request
 * record, the opcodes and each operation's arguments, the arrays JS hands back in replies, and the
 * functions JS calls. build.ts turns it into the shim's C header (native/gen-abi.ts writes
 * native/build/mcfs_abi.h); session.ts and native.ts use it directly, so a layout changed here changes
 * on both sides at the next build. test/unit/fuse-abi.test.ts has the C compiler confirm the offsets.
 */

/** Request header fields before the arguments, in order; the u32s come first, then the u64s. */
export const REQ_U32 = ["len", "id", "op", "uid", "gid", "pid", "n1", "n2", "dlen", "pad"] as const;
export const REQ_U64 = ["ino", "fh"] as const;
/** u64 argument slots after the header; each operation names the ones it uses, from the first. */
export const REQ_ARG_SLOTS = 10;
export const REQ_ARGS_AT = REQ_U32.length * 4 + REQ_U64.length * 8;
/** Bytes of the fixed part. Then come the strings (NUL-terminated, n1 and n2 bytes), the data (dlen), padding to 8. */
export const REQ_HEADER_BYTES = REQ_ARGS_AT + REQ_ARG_SLOTS * 8;

export const reqOffset = (field: (typeof REQ_U32)[number] | (typeof REQ_U64)[number]): number => {
  const i = (REQ_U32 as readonly string[]).indexOf(field);
  return i >= 0 ? i * 4 : REQ_U32.length * 4 + (REQ_U64 as readonly string[]).indexOf(field) * 8;
};

interface OpSpec {
  readonly code: number;
  /** Names of the u64 arguments, slot 0 first. */
  readonly args: readonly string[];
  /** Names of the strings, first and second. */
  readonly strings: readonly string[];
  /** Whether bytes follow the strings (write data, xattr value). */
  readonly data?: true;
}

/** Operations the shim queues for JS, by the name session.ts and the onOp metric use. */
export const OPS = {
  lookup: { code: 1, args: [], strings: ["name"] },
  getattr: { code: 2, args: ["hasFh"], strings: [] },
  setattr: { code: 3, args: ["valid", "hasFh", "size", "mode", "uid", "gid", "atimeSec", "atimeNsec", "mtimeSec", "mtimeNsec"], strings: [] },
  readlink: { code: 4, args: [], strings: [] },
  mknod: { code: 5, args: ["mode", "rdev"], strings: ["name"] },
  mkdir: { code: 6, args: ["mode"], strings: ["name"] },
  unlink: { code: 7, args: [], strings: ["name"] },
  rmdir: { code: 8, args: [], strings: ["name"] },
  symlink: { code: 9, args: [], strings: ["name", "target"] },
  rename: { code: 10, args: ["newParent", "flags"], strings: ["name", "newName"] },
  link: { code: 11, args: ["newParent"], strings: ["newName"] },
  open: { code: 12, args: ["flags"], strings: [] },
  read: { code: 13, args: ["offset", "size"], strings: [] },
  /** kill: setuid and setgid are to be taken from the file first (FUSE_HANDLE_KILLPRIV_V2, native/killpriv.c). */
  write: { code: 14, args: ["offset", "size", "kill"], strings: [], data: true },
  /**
   * dirty: the shim wrote through this handle's fd since the last flush (and forgot it). size, mtime,
   * ctime (ns): the file as the shim found it for this request (a passthrough writer's, whose writes
   * it cannot see otherwise); mtime 0 when it did not look.
   */
  flush: { code: 15, args: ["dirty", "size", "mtime", "ctime"], strings: [] },
  release: { code: 16, args: ["dirty", "size", "mtime", "ctime"], strings: [] },
  fsync: { code: 17, args: ["datasync", "dirty"], strings: [] },
  opendir: { code: 18, args: ["flags"], strings: [] },
  readdir: { code: 19, args: ["offset", "size"], strings: [] },
  releasedir: { code: 20, args: [], strings: [] },
  fsyncdir: { code: 21, args: ["datasync"], strings: [] },
  statfs: { code: 22, args: [], strings: [] },
  setxattr: { code: 23, args: ["flags"], strings: ["name"], data: true },
  getxattr: { code: 24, args: ["size"], strings: ["name"] },
  listxattr: { code: 25, args: ["size"], strings: [] },
  removexattr: { code: 26, args: [], strings: ["name"] },
  access: { code: 27, args: ["mask"], strings: [] },
  create: { code: 28, args: ["flags", "mode"], strings: ["name"] },
  readdirplus: { code: 29, args: ["offset", "size"], strings: [] },
  /**
   * A file the shim made and answered the create of itself (id 0; header ino: the parent, fh: the
   * handle): the inode of the kit it took, its local file open as fd, its group, its times (ns).
   */
  created: { code: 30, args: ["flags", "mode", "newIno", "fd", "gid", "timeNs"], strings: ["name"] },
  /** A fallocate of a file that may have setuid or setgid (killpriv.c): JS takes them, then the shim does it (mcfs_reply_fallocate). */
  fallocate: { code: 31, args: ["mode", "offset", "length"], strings: [] },
  /**
   * A read-only open the shim answered itself from a grant (id 0; header fh: the handle it took):
   * the handle's fd (a dup of the grant's), the grant's id, version, size and copy flag (grants.c).
   */
  opened: { code: 32, args: ["fd", "grant", "version", "size", "copy"], strings: [] },
} as const satisfies Record<string, OpSpec>;

export type OpName = keyof typeof OPS;

/** Attributes in replies (entry, attr, create, directory entries): int64 each, in this order. */
export const ATTR = ["ino", "mode", "nlink", "uid", "gid", "rdev", "size", "blocks", "atime", "atimeNsec", "mtime", "mtimeNsec", "ctime", "ctimeNsec", "blksize"] as const;

/**
 * A directory entry in a readdir reply: the attributes, then these int64s, then the name (NUL-terminated,
 * its length with the NUL in nameLen) padded to 8.
 */
export const DIRENT_AFTER_ATTR = ["next", "nameLen"] as const;

/** statfs reply: uint64 each, in this order. */
export const STATFS = ["bsize", "frsize", "blocks", "bfree", "bavail", "files", "ffree", "favail", "namemax"] as const;

/** Bits of the flags argument of the open and create replies. */
/**
 * unpublished: the handle's flush goes to JS even with nothing written (a create still to be published).
 * noFlush: the kernel sends no flush at the handle's closes (FOPEN_NOFLUSH: a read-only open has none to
 * publish; a sole node's writer publishes at its release).
 * passthrough: the fd is this node's own file of the inode: the kernel may read and write it itself (passthrough.c).
 * writes: a writer's handle (in passthrough, each flush and its release count as written: its writes are unseen).
 */
export const OPEN_FLAGS = { directIo: 1, keepCache: 2, nonseekable: 4, unpublished: 8, noFlush: 16, passthrough: 32, writes: 64 } as const;

/** A bit of setattr's valid past libfuse's FUSE_SET_ATTR_*: the kernel asked for setuid and setgid to be taken (FATTR_KILL_SUIDGID). */
export const SETATTR_KILL_PRIVILEGES = 1 << 30;

/**
 * What the shim takes for a file it makes itself (creates.c), one kit a file: u64 ino, u64 fh, then
 * the identity mark its local file gets (NUL-terminated) in the rest of KIT_BYTES.
 */
export const KIT_BYTES = 64;
export const KIT_MARK_AT = 16;

/** Read-only opens the shim answers from grants (grants.c): grants it holds at most, each with a file descriptor. */
export const GRANTS_MAX = 2048;
/**
 * Bits of a grant's flags. copy: its bytes are a copy of another node's file. fresh: granted before
 * any open here took the kernel to its version, so the kernel's pages of the inode may be another
 * version's: the first open answered from it drops them.
 */
export const GRANT_FLAGS = { copy: 1, fresh: 2 } as const;

/** Counters of reads and writes the shim served from local fds, uint64 each, in this order. */
export const IO_COUNTERS = ["readOps", "readBytes", "writeOps", "writeBytes", "passthroughOpens", "passthroughShared"] as const;

/**
 * The functions the shim exports, in C. gen-abi.ts declares them in mcfs_abi.h, so the compiler refuses
 * a definition that differs; native.ts hands them to dlopen, a pointer becoming "ptr" and a scalar
 * keeping its C name (which bun:ffi knows). Scalars are one word: int, uint32_t, uint64_t, double.
 */
export const SHIM_FUNCTIONS = {
  mcfs_start: { returns: "int", args: ["const char *mountpoint", "const char *opts", "int debug", "int single", "void (*wake)(void)"] },
  mcfs_running: { returns: "int", args: [] },
  /** 1 once the kernel agreed to FUSE_HANDLE_KILLPRIV_V2 (writes without a security.capability lookup each). */
  mcfs_killpriv: { returns: "int", args: [] },
  mcfs_passthrough: { returns: "int", args: [] },
  /** ino has setuid or setgid though its kernel has not been told (another node's chmod): writes to it go to JS. */
  mcfs_killpriv_mark: { returns: "void", args: ["uint64_t ino"] },
  mcfs_poll: { returns: "int", args: ["uint8_t *buf", "int cap"] },
  mcfs_stop: { returns: "int", args: ["int conn", "int timeout_ms"] },
  mcfs_reply_err: { returns: "int", args: ["uint32_t id", "int err"] },
  mcfs_reply_none: { returns: "int", args: ["uint32_t id"] },
  mcfs_reply_entry: { returns: "int", args: ["uint32_t id", "const int64_t *attr", "double entry_to", "double attr_to"] },
  mcfs_reply_attr: { returns: "int", args: ["uint32_t id", "const int64_t *attr", "double attr_to"] },
  mcfs_reply_open: { returns: "int", args: ["uint32_t id", "uint64_t ino", "uint64_t fh", "int fd", "uint32_t flags"] },
  mcfs_reply_create: { returns: "int", args: ["uint32_t id", "const int64_t *attr", "double entry_to", "double attr_to", "uint64_t fh", "int fd", "uint32_t flags"] },
  mcfs_flush_notes: { returns: "void", args: ["int on"] },
  mcfs_creates_start: { returns: "void", args: ["double entry_to", "double attr_to", "const char *reserved_name", "const char *mark_name", "int of_cluster"] },
  mcfs_create_kits: { returns: "int", args: ["const uint8_t *kits", "int n"] },
  mcfs_creates_made: { returns: "uint64_t", args: [] },
  mcfs_creates_truncated: { returns: "uint64_t", args: [] },
  mcfs_listing_make_here: { returns: "int", args: ["uint64_t dir", "int fd", "uint32_t mode", "uint32_t gid", "const char *name", "int file_fd"] },
  mcfs_listing_make_elsewhere: { returns: "void", args: ["uint64_t dir"] },
  mcfs_clear_fh: { returns: "void", args: ["uint64_t fh"] },
  mcfs_dirty_fh: { returns: "void", args: ["uint64_t fh"] },
  mcfs_fh_written: { returns: "int", args: ["uint64_t fh"] },
  mcfs_follow_fh: { returns: "void", args: ["uint64_t fh", "int fd", "uint64_t ready"] },
  mcfs_io_counters: { returns: "void", args: ["uint64_t *out"] },
  mcfs_space_floor: { returns: "void", args: ["uint64_t bytes"] },
  mcfs_reply_buf: { returns: "int", args: ["uint32_t id", "const void *buf", "uint64_t len"] },
  mcfs_reply_fd: { returns: "int", args: ["uint32_t id", "int fd", "uint64_t off", "uint64_t len"] },
  mcfs_reply_write: { returns: "int", args: ["uint32_t id", "uint64_t count"] },
  mcfs_reply_fallocate: { returns: "int", args: ["uint32_t id", "uint64_t fh", "int mode", "uint64_t offset", "uint64_t length"] },
  mcfs_reply_xattr: { returns: "int", args: ["uint32_t id", "uint64_t count"] },
  mcfs_reply_readlink: { returns: "int", args: ["uint32_t id", "const char *target"] },
  mcfs_reply_statfs: { returns: "int", args: ["uint32_t id", "const uint64_t *s"] },
  mcfs_reply_dir: { returns: "int", args: ["uint32_t id", "uint64_t size", "int plus", "const uint8_t *ents", "int n", "double entry_to", "double attr_to"] },
  mcfs_inval_entry: { returns: "int", args: ["uint64_t parent", "const char *name"] },
  mcfs_inval_inode: { returns: "int", args: ["uint64_t ino"] },
  mcfs_inval_attrs: { returns: "int", args: ["uint64_t ino"] },
  mcfs_inval_dir_now: { returns: "int", args: ["uint64_t ino"] },
  mcfs_entry_answering: { returns: "void", args: ["uint64_t ino"] },
  mcfs_entry_keep: { returns: "int", args: ["uint64_t parent", "const uint8_t *ents", "int n", "double entry_to", "double attr_to", "uint32_t ttl_ms"] },
  mcfs_entry_drop: { returns: "void", args: ["uint64_t parent", "const char *name"] },
  mcfs_entry_drop_inode: { returns: "void", args: ["uint64_t ino"] },
  mcfs_entry_drop_dir: { returns: "void", args: ["uint64_t dir"] },
  mcfs_entry_clear: { returns: "void", args: [] },
  mcfs_entry_hits: { returns: "uint64_t", args: [] },
  mcfs_attr_keep: { returns: "int", args: ["const uint8_t *ents", "int n", "double attr_to", "uint32_t ttl_ms"] },
  mcfs_attr_hits: { returns: "uint64_t", args: [] },
  mcfs_flush_requests: { returns: "uint64_t", args: [] },
  mcfs_listing_set: { returns: "int", args: ["uint64_t dir", "const char *names", "int n"] },
  mcfs_listing_name: { returns: "void", args: ["uint64_t dir", "const char *name", "int present"] },
  mcfs_listing_drop: { returns: "void", args: ["uint64_t dir"] },
  mcfs_listing_clear: { returns: "void", args: [] },
  mcfs_listing_absent_hits: { returns: "uint64_t", args: [] },
  mcfs_listing_trust_for: { returns: "void", args: ["int ms"] },
  mcfs_notes_hold: { returns: "void", args: [] },
  mcfs_notes_release: { returns: "void", args: [] },
  mcfs_notes_pushed: { returns: "uint64_t", args: [] },
  mcfs_notes_done: { returns: "uint64_t", args: [] },
  mcfs_notes_want: { returns: "int", args: ["uint64_t up_to"] },
  mcfs_grant: { returns: "int", args: ["uint64_t ino", "int fd", "uint64_t id", "uint64_t version", "uint64_t size", "uint32_t flags"] },
  mcfs_grant_revoke: { returns: "void", args: ["uint64_t ino"] },
  mcfs_grant_settle: { returns: "void", args: ["uint64_t ino", "uint64_t id"] },
  mcfs_grant_clear: { returns: "void", args: [] },
  mcfs_grant_fhs: { returns: "int", args: ["const uint64_t *fhs", "int n"] },
  mcfs_grant_opens: { returns: "uint64_t", args: [] },
} as const;
