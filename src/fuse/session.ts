import { JSCallback } from "bun:ffi";
import { loadShim, type Shim } from "./native.ts";
import { accessSync, closeSync, constants, readFileSync } from "node:fs";
import { detachMount, findMount, stillMounted } from "./mountpoint.ts";
import { isRoot } from "./fusermount.ts";
import { ATTR, DIRENT_AFTER_ATTR, GRANT_FLAGS, GRANTS_MAX, IO_COUNTERS, KIT_BYTES, KIT_MARK_AT, OPEN_FLAGS, OPS, REQ_ARGS_AT, REQ_HEADER_BYTES, SETATTR_KILL_PRIVILEGES, STATFS, reqOffset, type OpName } from "./abi.ts";
import type { Attr, Caller, DirEntry, FileSystem, OpenReply, SeenFile, SetAttr, ShimCreates, ShimEntries, ShimGrants } from "./types.ts";
import { E, toErrno } from "../util/errno.ts";
import { cstr } from "../util/c-string.ts";

// FUSE_SET_ATTR_* bits
const SA_MODE = 1, SA_UID = 2, SA_GID = 4, SA_SIZE = 8, SA_ATIME = 16, SA_MTIME = 32, SA_ATIME_NOW = 128, SA_MTIME_NOW = 256, SA_CTIME = 1024;

const NS = 1_000_000_000n;
/** mcfs_follow_fh: every byte of the copy may be read. */
const WHOLE = 0xffff_ffff_ffff_ffffn;
/** Longest a stop waits for the kernel to hand over the requests it holds (see handedOver). */
const HANDOVER_MS = 1000;

/** A queued request of operation K: its header, then its arguments and strings by the names abi.ts gives them. */
type Req<K extends OpName> = { readonly id: number; readonly c: Caller; readonly ino: number; readonly fh: number }
  & { readonly [A in (typeof OPS)[K]["args"][number]]: bigint }
  & { readonly [S in (typeof OPS)[K]["strings"][number]]: string }
  & ((typeof OPS)[K] extends { data: true } ? { readonly data: Uint8Array } : unknown);

/** One small function per operation: call the FileSystem, reply. A throw is answered with its errno by the caller. */
type Handlers = { readonly [K in OpName]: (r: Req<K>) => Promise<void> };

interface Decoder {
  readonly name: OpName;
  readonly args: readonly string[];
  readonly strings: readonly string[];
}

/** abi.ts's operations by opcode, which is all the request loop needs to decode any of them. */
const DECODERS: (Decoder | undefined)[] = [];
for (const [name, spec] of Object.entries(OPS)) DECODERS[spec.code] = { name: name as OpName, args: spec.args, strings: spec.strings };

/** Where the header fields are, looked up once rather than per request. */
const H = {
  len: reqOffset("len"), id: reqOffset("id"), op: reqOffset("op"), uid: reqOffset("uid"), gid: reqOffset("gid"), pid: reqOffset("pid"),
  n1: reqOffset("n1"), n2: reqOffset("n2"), dlen: reqOffset("dlen"), ino: reqOffset("ino"), fh: reqOffset("fh"),
};

/** Each reply attribute from an Attr; the type makes every field abi.ts lists be filled. */
const ATTR_OF: { readonly [K in (typeof ATTR)[number]]: (a: Attr) => bigint } = {
  ino: (a) => BigInt(a.ino),
  mode: (a) => BigInt(a.mode),
  nlink: (a) => BigInt(a.nlink),
  uid: (a) => BigInt(a.uid),
  gid: (a) => BigInt(a.gid),
  rdev: (a) => BigInt(a.rdev),
  size: (a) => BigInt(a.size),
  blocks: (a) => BigInt(Math.ceil(a.size / 512)),
  atime: (a) => a.atime / NS,
  atimeNsec: (a) => a.atime % NS,
  mtime: (a) => a.mtime / NS,
  mtimeNsec: (a) => a.mtime % NS,
  ctime: (a) => a.ctime / NS,
  ctimeNsec: (a) => a.ctime % NS,
  blksize: () => 4096n,
};
const ATTR_GETTERS = ATTR.map((k) => ATTR_OF[k]);
const DIRENT_WORDS = ATTR.length + DIRENT_AFTER_ATTR.length;
const DIRENT_NEXT = ATTR.length + DIRENT_AFTER_ATTR.indexOf("next");
const DIRENT_NAME_LEN = ATTR.length + DIRENT_AFTER_ATTR.indexOf("nameLen");

function packAttr(a: Attr, out: BigInt64Array, o = 0): void {
  for (let i = 0; i < ATTR_GETTERS.length; i++) out[o + i] = ATTR_GETTERS[i]!(a);
}

function setAttrOf(r: Req<"setattr">): SetAttr {
  const valid = Number(r.valid);
  const s: SetAttr = {};
  if (valid & SA_MODE) s.mode = Number(r.mode);
  if (valid & SA_UID) s.uid = Number(r.uid);
  if (valid & SA_GID) s.gid = Number(r.gid);
  if (valid & SA_SIZE) s.size = Number(r.size);
  if (valid & SA_ATIME) s.atime = valid & SA_ATIME_NOW ? "now" : r.atimeSec * NS + r.atimeNsec;
  if (valid & SA_MTIME) s.mtime = valid & SA_MTIME_NOW ? "now" : r.mtimeSec * NS + r.mtimeNsec;
  if (valid & SA_CTIME) s.ctime = 0n;
  if (valid & SETATTR_KILL_PRIVILEGES) s.killPrivileges = true;
  return s;
}

function openFlags(o: OpenReply): number {
  return (o.directIo ? OPEN_FLAGS.directIo : 0) | (o.keepCache ? OPEN_FLAGS.keepCache : 0) | (o.unpublished ? OPEN_FLAGS.unpublished : 0) | (o.noFlush ? OPEN_FLAGS.noFlush : 0) | (o.passthrough ? OPEN_FLAGS.passthrough : 0) | (o.writes ? OPEN_FLAGS.writes : 0);
}

export interface SessionOptions {
  mountPoint: string;
  /** -o options for the mount (fsname, allow_other, default_permissions, ...). */
  options: string[];
  debug?: boolean;
  singleThread?: boolean;
  entryTimeout: number;
  attrTimeout: number;
  /**
   * The shim answers a close's flush itself and hands it to the FileSystem after, for one whose flush
   * cannot fail for a reason the closer must hear and that nobody else waits for (a sole node's).
   * Later requests wait for such a flush to be done: none is answered from what it has yet to record.
   * So with a written handle's release; and the files the shim makes have no flush (their release publishes).
   */
  flushNotes?: boolean;
  /**
   * The shim answers creates itself where it can (FuseSession.creates), for a FileSystem with
   * created(): never of reservedName at the top (left to the FileSystem), each file marked with
   * the extended attribute markName. cluster: the FileSystem is a node of a cluster (no listings
   * whole; O_EXCL creates and every close of a file made so go to it).
   */
  createsInShim?: { reservedName: string; markName: string; cluster: boolean };
  /** Listings (ShimEntries.list) answer only while ShimEntries.trustFor says so: a node of a cluster. */
  listingsExpire?: boolean;
  /** Called once per request with its op name, duration, errno (0 on success), inode and name (if any). */
  onOp?: (op: string, seconds: number, errno: number, ino: number, name: string) => void;
  /** Called when the session ends on its own (unmounted from outside). */
  onExit?: () => void;
}

/** Why fuse_session_mount failed, as far as can be told from here (fusermount3 printed its own reason). */
function mountFailure(): string {
  try {
    accessSync("/dev/fuse", constants.R_OK | constants.W_OK);
  } catch {
    return `/dev/fuse is missing or not usable by uid ${process.geteuid?.()}`;
  }
  return isRoot() ? "mount(2) refused it" : "fusermount3 refused it or could not be run (its message is above)";
}

/** A mounted FUSE session that feeds requests to a FileSystem and replies exactly once to each. */
export interface FuseSession {
  readonly mountPoint: string;
  stop(timeoutMs?: number): Promise<void>;
  /** Lazily unmount at once, when the process exits without a stop (a second signal): no dead mount is left behind. */
  unmountNow(): void;
  invalidateEntry(parent: number, name: string): void;
  /**
   * Many at once: the notifier thread is woken once for them all. The shim's own entries of them go
   * at once; the kernel hears of them only after meanwhile has run (new attributes it gives the shim
   * are there before the kernel asks again). dirs: directories whose attributes the kernel forgets,
   * made on this thread (no directory has pages to drop): no wake for those.
   */
  invalidateMany(entries: Iterable<[number, string]>, inodes: Iterable<number>, meanwhile?: () => void, dirs?: Iterable<number>): void;
  /** Forget the kernel's cached attributes of ino (its pages stay). */
  invalidateAttrs(ino: number): void;
  /** An entry reply naming ino is on its way: an invalidation of ino finding nothing is tried again until it lands. */
  entryAnswering(ino: number): void;
  /** Resolves once every invalidation asked for so far has reached the kernel. */
  flushInvalidations(): Promise<void>;
  /**
   * Take in now what the shim queued without a wake (releases and creates it answered itself):
   * their handlers start before this returns, so what is open here is what the kernel has open.
   */
  takeNotes(): void;
  /** Whether this session's mount is still in /proc/self/mountinfo (a stop that could not unmount leaves it). */
  isMounted(): boolean;
  /** Reads and writes the shim served from local files (they never reach JS). */
  ioCounters(): IoCounters;
  /** Writes the shim serves fail with ENOSPC where they would leave less than bytes free on their disk (0: never). */
  spaceFloor(bytes: number): void;
  /** Names the shim answers lookups of without asking the filesystem. */
  readonly entries: ShimEntries;
  /** Lookups the shim answered from those entries. */
  shimLookups(): number;
  /** Getattrs the shim answered from the attributes kept there. */
  shimGetattrs(): number;
  /** Flushes the kernel sent (each close of a handle opened without noFlush), wherever answered. */
  flushRequests(): number;
  /** Whether the kernel agreed to leave taking setuid and setgid to mcfs (FUSE_HANDLE_KILLPRIV_V2): no lookup of security.capability before each write. */
  killPrivileges(): boolean;
  /** Whether the kernel agreed to read and write files' backing fds itself (FUSE passthrough, Linux 6.9+). */
  passthrough(): boolean;
  /** ino has setuid or setgid now, though this kernel has not been told: its writers' writes go to JS, which takes them. */
  markPrivileged(ino: number): void;
  /** Lookups the shim answered ENOENT itself, from listings (ShimEntries.list). */
  shimAbsent(): number;
  /** Files the shim made itself (ShimCreates). */
  shimCreates(): number;
  /** The FUSE connection's id under /sys/fs/fuse/connections (-1: not found in the mount table). */
  readonly connection: number;
  /** Truncates the shim made itself, through the handle of a file it made whose note JS had not taken. */
  shimTruncates(): number;
  readonly creates: ShimCreates;
  /** Opens the shim answered itself (ShimGrants). */
  shimOpens(): number;
  readonly grants: ShimGrants;
  /** Reads of fh are no longer served from its fd by the shim: they come to the filesystem (which keeps the fd open until release). */
  detach(fh: number): void;
  /** The filesystem changed fh's file itself: its next flush comes to the filesystem even if the shim served no write. */
  markDirty(fh: number): void;
  /** Whether the shim saw fh written since its last flush or release, which it then counts as one (after a stop: a release the kernel dropped). */
  written(fh: number): boolean;
  /** Reads of fh are served by the shim from fd, of its first bytes (all of them if whole); the rest come to the filesystem. */
  follow(fh: number, fd: number, bytes: number, whole: boolean): void;
  /**
   * Take in now what the shim has queued: requests, and the releases it answered itself (those reach
   * the filesystem with the next request, or a late wake later). For a decision a release may change.
   */
  takeQueued(): void;
  readonly closed: Promise<void>;
}

export interface IoCounters {
  readOps: number;
  readBytes: number;
  writeOps: number;
  writeBytes: number;
  /** Handles the kernel reads and writes itself (FUSE passthrough): their bytes are in none of the above. */
  passthroughOpens: number;
  /** Of those, opens JS did not ask to pass through, given the inode's backing file (passthrough.c). */
  passthroughShared: number;
}

const enc = new TextEncoder();
/**
 * Names are kept as text (Redis keys, JSON): one that is not UTF-8 cannot be stored as it is, and a
 * lossy decoding would make different names one. Such a name is refused (EILSEQ), never changed.
 */
const dec = new TextDecoder("utf-8", { fatal: true });

/** Mount at opts.mountPoint (made ready by prepareMountpoint) and serve fs there. */
export async function startFuseSession(fs: FileSystem, opts: SessionOptions): Promise<FuseSession> {
  const shim: Shim = await loadShim();
  // Called from the shim's threads; runs as a task on this thread. Never closed: a task Bun queued may
  // still be on its way to it after the session ends (one per process, as sessions are).
  const wake = new JSCallback(() => {
    // Once stopped, what is left is taken in by stop alone (notes only).
    if (stopped) return;
    drain();
    settleFlushes();
  }, { returns: "void", args: [], threadsafe: true });
  shim.mcfs_flush_notes(opts.flushNotes ? 1 : 0);
  if (opts.listingsExpire) shim.mcfs_listing_trust_for(0);
  if (opts.createsInShim) {
    if (!fs.created) throw new Error("createsInShim needs a FileSystem that takes in created files");
    shim.mcfs_creates_start(opts.entryTimeout, opts.attrTimeout, cstr(opts.createsInShim.reservedName), cstr(opts.createsInShim.markName), opts.createsInShim.cluster ? 1 : 0);
  }
  const endFd = shim.mcfs_start(cstr(opts.mountPoint), cstr(opts.options.join(",")), opts.debug ? 1 : 0, opts.singleThread ? 1 : 0, wake.ptr);
  if (endFd < 0) throw new Error(`cannot mount FUSE at ${opts.mountPoint}: ${-endFd === E.EIO ? mountFailure() : `errno ${-endFd}`}`);
  const conn = findMount(opts.mountPoint)?.minor ?? -1;

  const attrBuf = new BigInt64Array(ATTR.length);
  // Room for the largest request (a 1 MiB write with its header) and a batch of small ones.
  const pollBuf = new Uint8Array(4 << 20);
  const view = new DataView(pollBuf.buffer);
  let stopped = false;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  // The shim writes to this pipe when the session ends; the pending read keeps the event loop alive while mounted.
  const reader = Bun.file(endFd).stream().getReader();

  const entryTo = opts.entryTimeout, attrTo = opts.attrTimeout;

  function follow(fh: number, fd: number, bytes: number, whole: boolean): void {
    shim.mcfs_follow_fh(fh, fd, whole ? WHOLE : BigInt(bytes));
  }
  /** What the shim found of a passthrough writer's file at its flush or release (mtime 0: it did not look). */
  const seenOf = (r: { size: bigint; mtime: bigint; ctime: bigint }): SeenFile | undefined => (r.mtime !== 0n ? { size: Number(r.size), mtimeNs: r.mtime, ctimeNs: r.ctime } : undefined);

  function ok(id: number) {
    shim.mcfs_reply_err(id, 0);
  }
  function replyEntry(id: number, a: Attr) {
    packAttr(a, attrBuf);
    shim.mcfs_reply_entry(id, attrBuf, entryTo, attrTo);
  }
  function replyAttr(id: number, a: Attr) {
    packAttr(a, attrBuf);
    shim.mcfs_reply_attr(id, attrBuf, attrTo);
  }

  /** Entries in the layout of abi.ts (DIRENT_AFTER_ATTR): attributes, next, name length, name padded to 8. */
  function packDirents(ents: { name: string; attr: Attr; next: number }[]): Uint8Array {
    let bytes = 0;
    const names = ents.map((e) => enc.encode(e.name));
    for (const n of names) bytes += DIRENT_WORDS * 8 + ((n.length + 1 + 7) & ~7);
    const buf = new ArrayBuffer(Math.max(bytes, 8));
    const i64 = new BigInt64Array(buf);
    const u8 = new Uint8Array(buf);
    let off = 0;
    for (let i = 0; i < ents.length; i++) {
      const e = ents[i]!, n = names[i]!;
      packAttr(e.attr, i64, off / 8);
      i64[off / 8 + DIRENT_NEXT] = BigInt(e.next);
      i64[off / 8 + DIRENT_NAME_LEN] = BigInt(n.length + 1);
      u8.set(n, off + DIRENT_WORDS * 8);
      off += DIRENT_WORDS * 8 + ((n.length + 1 + 7) & ~7);
    }
    return u8;
  }

  /** A time to live as the shim takes it: whole milliseconds, none below 0. */
  const wholeMs = (ms: number) => Math.max(0, Math.floor(ms));

  function replyDir(id: number, size: number, plus: boolean, ents: DirEntry[]) {
    shim.mcfs_reply_dir(id, size, plus ? 1 : 0, packDirents(ents), ents.length, entryTo, attrTo);
  }

  async function readdir(r: Req<"readdir" | "readdirplus">, plus: boolean) {
    const size = Number(r.size);
    // Upper bound on what fits, so a huge directory is not fetched whole for each call.
    const max = Math.max(1, Math.floor(size / (plus ? 136 : 32)));
    replyDir(r.id, size, plus, await fs.readdir(r.c, r.ino, r.fh, Number(r.offset), max, plus));
  }

  function replySized(id: number, size: number, v: Uint8Array) {
    if (size === 0) shim.mcfs_reply_xattr(id, v.length);
    else if (v.length > size) shim.mcfs_reply_err(id, E.ERANGE);
    else shim.mcfs_reply_buf(id, v.length ? v : null, v.length);
  }

  const handlers: Handlers = {
    lookup: async (r) => replyEntry(r.id, await fs.lookup(r.c, r.ino, r.name)),
    getattr: async (r) => replyAttr(r.id, await fs.getattr(r.c, r.ino, r.hasFh ? r.fh : undefined)),
    setattr: async (r) => replyAttr(r.id, await fs.setattr(r.c, r.ino, setAttrOf(r), r.hasFh ? r.fh : undefined)),
    readlink: async (r) => void shim.mcfs_reply_readlink(r.id, cstr(await fs.readlink(r.c, r.ino))),
    mknod: async (r) => replyEntry(r.id, await fs.mknod(r.c, r.ino, r.name, Number(r.mode), Number(r.rdev))),
    mkdir: async (r) => replyEntry(r.id, await fs.mkdir(r.c, r.ino, r.name, Number(r.mode))),
    unlink: async (r) => {
      await fs.unlink(r.c, r.ino, r.name);
      ok(r.id);
    },
    rmdir: async (r) => {
      await fs.rmdir(r.c, r.ino, r.name);
      ok(r.id);
    },
    symlink: async (r) => replyEntry(r.id, await fs.symlink(r.c, r.ino, r.name, r.target)),
    rename: async (r) => {
      await fs.rename(r.c, r.ino, r.name, Number(r.newParent), r.newName, Number(r.flags));
      ok(r.id);
    },
    link: async (r) => replyEntry(r.id, await fs.link(r.c, r.ino, Number(r.newParent), r.newName)),
    open: async (r) => {
      const o = await fs.open(r.c, r.ino, Number(r.flags));
      if (shim.mcfs_reply_open(r.id, r.ino, o.fh, o.fd ?? -1, openFlags(o)) !== 0) await fs.release(r.c, r.ino, o.fh, false);
      else o.follow?.((fd, bytes, whole) => follow(o.fh, fd, bytes, whole));
    },
    create: async (r) => {
      const { attr, open } = await fs.create(r.c, r.ino, r.name, Number(r.mode), Number(r.flags));
      packAttr(attr, attrBuf);
      if (shim.mcfs_reply_create(r.id, attrBuf, entryTo, attrTo, open.fh, open.fd ?? -1, openFlags(open)) !== 0) await fs.release(r.c, attr.ino, open.fh, false);
    },
    read: async (r) => {
      const d = await fs.read(r.c, r.ino, r.fh, Number(r.offset), Number(r.size));
      if (d instanceof Uint8Array) return void shim.mcfs_reply_buf(r.id, d.length ? d : null, d.length);
      try {
        shim.mcfs_reply_fd(r.id, d.fd, d.offset, d.length);
      } finally {
        closeSync(d.fd);
      }
    },
    write: async (r) => void shim.mcfs_reply_write(r.id, await fs.write(r.c, r.ino, r.fh, Number(r.offset), r.data, r.kill !== 0n)),
    flush: async (r) => {
      await fs.flush(r.c, r.ino, r.fh, r.dirty !== 0n, seenOf(r));
      // Id 0: a flush the shim answered itself (flushNotes).
      if (r.id !== 0) ok(r.id);
    },
    release: async (r) => {
      shim.mcfs_clear_fh(r.fh);
      await fs.release(r.c, r.ino, r.fh, r.dirty !== 0n, seenOf(r));
      // Id 0: a clean release the shim answered itself (the kernel waits for nothing).
      if (r.id !== 0) ok(r.id);
    },
    opened: async (r) => {
      if (!fs.opened) throw new Error("a grant was made for a FileSystem that takes in no opens");
      fs.opened(r.c, r.ino, { fh: r.fh, fd: Number(r.fd), grant: Number(r.grant), version: Number(r.version), size: Number(r.size), copy: r.copy !== 0n });
    },
    created: async (r) => {
      await fs.created!(r.c, r.ino, r.name, { ino: Number(r.newIno), fh: r.fh, fd: Number(r.fd), mode: Number(r.mode), flags: Number(r.flags), gid: Number(r.gid), time: r.timeNs });
    },
    fsync: async (r) => {
      await fs.fsync(r.c, r.ino, r.fh, r.datasync !== 0n, r.dirty !== 0n);
      ok(r.id);
    },
    opendir: async (r) => void shim.mcfs_reply_open(r.id, 0, await fs.opendir(r.c, r.ino), -1, 0),
    readdir: (r) => readdir(r, false),
    readdirplus: (r) => readdir(r, true),
    releasedir: async (r) => {
      await fs.releasedir(r.c, r.ino, r.fh);
      ok(r.id);
    },
    // Directories have nothing of their own to sync: their changes are in Redis once made.
    fsyncdir: async (r) => ok(r.id),
    fallocate: async (r) => {
      await fs.fallocating(r.c, r.ino, r.fh);
      shim.mcfs_reply_fallocate(r.id, r.fh, Number(r.mode), r.offset, r.length);
    },
    statfs: async (r) => {
      const s = await fs.statfs(r.c, r.ino);
      shim.mcfs_reply_statfs(r.id, new BigUint64Array(STATFS.map((k) => BigInt(Math.max(0, Math.floor(s[k]))))));
    },
    setxattr: async (r) => {
      await fs.setxattr(r.c, r.ino, r.name, r.data, Number(r.flags));
      ok(r.id);
    },
    getxattr: async (r) => replySized(r.id, Number(r.size), await fs.getxattr(r.c, r.ino, r.name)),
    listxattr: async (r) => {
      const names = await fs.listxattr(r.c, r.ino);
      replySized(r.id, Number(r.size), enc.encode(names.map((n) => n + "\0").join("")));
    },
    removexattr: async (r) => {
      await fs.removexattr(r.c, r.ino, r.name);
      ok(r.id);
    },
    access: async (r) => {
      await fs.access(r.c, r.ino, Number(r.mask));
      ok(r.id);
    },
  };

  /** Settles once every flush, created or written release note dispatched so far has; until then requests wait for it, in order. */
  let afterNotes: Promise<void> | undefined;

  /** Dispatch r, after the notes before it that publish (what they record is what later requests must see). */
  function admit(op: OpName, r: Req<OpName>, name: string) {
    const wait = afterNotes;
    const note = r.id === 0 && (op === "flush" || op === "created" || (op === "release" && (r as Req<"release">).dirty !== 0n));
    // An open the shim answered is taken in at once (its handler waits for nothing): an open of a
    // newer version must find its handle to supersede it (file-ops). Its release comes after it.
    if ((!wait && !note) || op === "opened") return void dispatch(op, r, name);
    const run = wait ? wait.then(() => dispatch(op, r, name)) : dispatch(op, r, name);
    if (!note) return;
    const mine: Promise<void> = run.then(() => {
      if (afterNotes === mine) afterNotes = undefined;
    });
    afterNotes = mine;
  }

  /** Run one request's handler; whatever it throws is answered with its errno. name: its first string, for onOp. */
  function dispatch(op: OpName, r: Req<OpName>, name: string): Promise<void> {
    const t0 = opts.onOp ? performance.now() : 0;
    const done = (errno: number) => opts.onOp?.(op, (performance.now() - t0) / 1000, errno, r.ino, name);
    let p: Promise<void>;
    try {
      // Decoded by the table for this opcode, so r has exactly the fields handlers[op] reads.
      p = (handlers[op] as (r: Req<OpName>) => Promise<void>)(r);
    } catch (e) {
      p = Promise.reject(e);
    }
    return p.then(
      () => done(0),
      (e: unknown) => {
        const errno = toErrno(e);
        shim.mcfs_reply_err(r.id, errno);
        done(errno);
      },
    );
  }

  /** Decode the request at o in pollBuf by its operation's entry in abi.ts and dispatch it. */
  function decode(o: number) {
    const id = view.getUint32(o + H.id, true);
    const d = DECODERS[view.getUint32(o + H.op, true)];
    if (!d) return void shim.mcfs_reply_err(id, E.ENOSYS);
    const c: Caller = { uid: view.getUint32(o + H.uid, true), gid: view.getUint32(o + H.gid, true), pid: view.getUint32(o + H.pid, true) };
    const lens = [view.getUint32(o + H.n1, true), view.getUint32(o + H.n2, true)];
    const dl = view.getUint32(o + H.dlen, true);
    const r: Record<string, unknown> = { id, c, ino: Number(view.getBigUint64(o + H.ino, true)), fh: Number(view.getBigUint64(o + H.fh, true)) };
    for (let i = 0; i < d.args.length; i++) r[d.args[i]!] = view.getBigUint64(o + REQ_ARGS_AT + i * 8, true);
    let p = o + REQ_HEADER_BYTES;
    for (let i = 0; i < d.strings.length; i++) {
      const l = lens[i]!;
      try {
        r[d.strings[i]!] = l ? dec.decode(pollBuf.subarray(p, p + l - 1)) : "";
      } catch {
        // No such name can exist here; making one is refused.
        return void shim.mcfs_reply_err(id, d.name === "lookup" ? E.ENOENT : E.EILSEQ);
      }
      p += l;
    }
    p = o + REQ_HEADER_BYTES + lens[0]! + lens[1]!;
    r.data = dl ? pollBuf.slice(p, p + dl) : new Uint8Array(0);
    admit(d.name, r as Req<OpName>, d.strings.length ? (r[d.strings[0]!] as string) : "");
  }

  /** notesOnly: at the end, when a request's caller has had ENOTCONN already (mcfs_stop): only notes (id 0) are taken in. */
  function drain(notesOnly = false) {
    for (;;) {
      const n = shim.mcfs_poll(pollBuf, pollBuf.length);
      if (n <= 0) return;
      for (let o = 0; o < n; o += view.getUint32(o + H.len, true)) if (!notesOnly || view.getUint32(o + H.id, true) === 0) decode(o);
    }
  }

  /**
   * Until the kernel has no request of this connection left unanswered, or the deadline: a close
   * returns before the kernel hands its release over (a note that publishes, on a sole node), and
   * an unmount drops what the kernel still holds. Requests are served meanwhile; a session that
   * ended (its connection gone) has nothing more to hand over.
   */
  async function handedOver(deadline: number): Promise<void> {
    const waiting = `/sys/fs/fuse/connections/${conn}/waiting`;
    while (conn >= 0 && shim.mcfs_running()) {
      let n: number;
      try {
        n = Number(readFileSync(waiting, "utf8"));
      } catch {
        return; // No fusectl (a user's mount where the system has none): nothing to wait by.
      }
      if (!(n > 0) || performance.now() >= deadline) return;
      await Bun.sleep(2);
    }
  }

  /** Callers waiting for the notifier thread to reach a number of invalidations. */
  let flushWaiters: { upTo: number; resolve: () => void }[] = [];
  function settleFlushes(all = false) {
    while (flushWaiters.length) {
      const done = Number(shim.mcfs_notes_done());
      flushWaiters = flushWaiters.filter((w) => (all || w.upTo <= done ? (w.resolve(), false) : true));
      if (!flushWaiters.length) return;
      // The notifier wakes this thread only when asked to, for the lowest count waited for.
      const low = flushWaiters.reduce((m, w) => Math.min(m, w.upTo), Infinity);
      if (!shim.mcfs_notes_want(low)) return;
      // Reached meanwhile; or the notifier has stopped, and nothing more reaches the kernel: all settle.
      if (Number(shim.mcfs_notes_done()) < low) all = true;
    }
  }

  /**
   * Lazily unmount this session's mount if it is still there (never another mount at the same path).
   * A failure is returned, not thrown: the session is stopped all the same.
   */
  const detach = (): Error | undefined => {
    try {
      if (stillMounted(opts.mountPoint, conn)) detachMount(opts.mountPoint);
      return undefined;
    } catch (e) {
      return e as Error;
    }
  };

  (async () => {
    try {
      for (;;) {
        const r = await reader.read();
        if (r.done || stopped) break;
        drain();
        settleFlushes();
        if (!shim.mcfs_running()) break;
      }
    } catch {
      // pipe closed
    }
    if (!stopped) {
      stopped = true;
      // Gone from outside already, as a rule; the session's end (the loop failing) may have left it.
      void detach();
      shim.mcfs_stop(conn, 2000);
      opts.onExit?.();
    }
    settleFlushes(true);
    resolveClosed();
  })();

  return {
    mountPoint: opts.mountPoint,
    closed,
    async stop(timeoutMs = 5000) {
      if (!stopped) {
        const until = performance.now() + HANDOVER_MS;
        await handedOver(until);
        const unmountFailed = detach();
        // Closes by processes still in the mount (open files, a cwd) until it was detached.
        await handedOver(until);
        stopped = true;
        const rc = shim.mcfs_stop(conn, timeoutMs);
        if (rc !== 0) throw new Error(`FUSE session at ${opts.mountPoint} did not stop within ${timeoutMs} ms${unmountFailed ? ` (${unmountFailed.message})` : ""}`);
        await reader.cancel().catch(() => {});
        settleFlushes(true);
        resolveClosed();
        if (unmountFailed) throw unmountFailed;
      }
      // The notes the shim answered and JS has not taken in yet (a release that publishes, a file the
      // shim made) are taken in, and what they record is done, before the caller closes the files.
      drain(true);
      await afterNotes;
    },
    isMounted: () => stillMounted(opts.mountPoint, conn),
    connection: conn,
    unmountNow: () => void detach(),
    invalidateEntry(parent, name) {
      shim.mcfs_inval_entry(parent, cstr(name));
    },
    invalidateMany(entries, inodes, meanwhile, dirs = []) {
      const now = [...dirs];
      for (const ino of now) shim.mcfs_entry_drop_inode(ino);
      shim.mcfs_notes_hold();
      try {
        for (const [parent, name] of entries) shim.mcfs_inval_entry(parent, cstr(name));
        for (const ino of inodes) shim.mcfs_inval_inode(ino);
        meanwhile?.();
      } finally {
        shim.mcfs_notes_release();
        for (const ino of now) shim.mcfs_inval_dir_now(ino);
      }
    },
    invalidateAttrs(ino) {
      shim.mcfs_inval_attrs(ino);
    },
    entryAnswering(ino) {
      shim.mcfs_entry_answering(ino);
    },
    takeNotes() {
      if (!stopped) drain();
    },
    flushInvalidations() {
      const upTo = Number(shim.mcfs_notes_pushed());
      if (stopped || shim.mcfs_notes_want(upTo)) return Promise.resolve();
      return new Promise<void>((resolve) => flushWaiters.push({ upTo, resolve }));
    },
    markDirty(fh) {
      shim.mcfs_dirty_fh(fh);
    },
    written: (fh) => shim.mcfs_fh_written(fh) !== 0,
    detach(fh) {
      shim.mcfs_clear_fh(fh);
    },
    follow,
    takeQueued: drain,
    entries: {
      keep(parent, named, ttlMs) {
        if (!named.length) return;
        const ents = named.map(([name, attr]) => ({ name, attr, next: 0 }));
        shim.mcfs_entry_keep(parent, packDirents(ents), ents.length, entryTo, attrTo, wholeMs(ttlMs));
      },
      keepAttrs(attrs, ttlMs) {
        if (!attrs.length) return;
        shim.mcfs_attr_keep(packDirents(attrs.map((attr) => ({ name: "", attr, next: 0 }))), attrs.length, attrTo, wholeMs(ttlMs));
      },
      drop: (parent, name) => shim.mcfs_entry_drop(parent, cstr(name)),
      dropInode: (ino) => shim.mcfs_entry_drop_inode(ino),
      dropDir: (dir) => shim.mcfs_entry_drop_dir(dir),
      dropAll: () => shim.mcfs_entry_clear(),
      list(dir, names) {
        const all = [...names];
        // One NUL more: an empty listing still passes a buffer.
        shim.mcfs_listing_set(dir, enc.encode(all.map((n) => n + "\0").join("") + "\0"), all.length);
      },
      listName: (dir, name, present) => shim.mcfs_listing_name(dir, cstr(name), present ? 1 : 0),
      unlist: (dir) => shim.mcfs_listing_drop(dir),
      unlistAll: () => shim.mcfs_listing_clear(),
      trustFor: (ms) => shim.mcfs_listing_trust_for(Math.max(0, Math.min(2 ** 31 - 1, Math.floor(ms)))),
    },
    shimLookups: () => Number(shim.mcfs_entry_hits()),
    shimGetattrs: () => Number(shim.mcfs_attr_hits()),
    flushRequests: () => Number(shim.mcfs_flush_requests()),
    killPrivileges: () => shim.mcfs_killpriv() === 1,
    passthrough: () => shim.mcfs_passthrough() === 1,
    markPrivileged: (ino) => shim.mcfs_killpriv_mark(BigInt(ino)),
    shimAbsent: () => Number(shim.mcfs_listing_absent_hits()),
    shimCreates: () => Number(shim.mcfs_creates_made()),
    shimTruncates: () => Number(shim.mcfs_creates_truncated()),
    shimOpens: () => Number(shim.mcfs_grant_opens()),
    grants: {
      limit: GRANTS_MAX,
      grant: (ino, fd, id, version, size, copy, fresh) => shim.mcfs_grant(ino, fd, id, version, size, (copy ? GRANT_FLAGS.copy : 0) | (fresh ? GRANT_FLAGS.fresh : 0)) === 0,
      settle: (ino, id) => shim.mcfs_grant_settle(ino, id),
      revoke: (ino) => shim.mcfs_grant_revoke(ino),
      clear: () => shim.mcfs_grant_clear(),
      supply(fhs) {
        if (fhs.length) shim.mcfs_grant_fhs(new BigUint64Array(fhs.map(BigInt)), fhs.length);
      },
    },
    creates: {
      supply(kits) {
        const buf = new Uint8Array(Math.max(1, kits.length) * KIT_BYTES);
        const v = new DataView(buf.buffer);
        kits.forEach((k, i) => {
          v.setBigUint64(i * KIT_BYTES, BigInt(k.ino), true);
          v.setBigUint64(i * KIT_BYTES + 8, BigInt(k.fh), true);
          const mark = enc.encode(k.mark);
          if (mark.length >= KIT_BYTES - KIT_MARK_AT) throw new Error(`identity mark too long for a kit: ${k.mark}`);
          buf.set(mark, i * KIT_BYTES + KIT_MARK_AT);
        });
        return shim.mcfs_create_kits(buf, kits.length);
      },
      makeHere: (dir, dirFd, mode, gid, made) => shim.mcfs_listing_make_here(dir, dirFd, mode >>> 0, gid >>> 0, cstr(made?.name ?? ""), made?.fd ?? -1) === 0,
      elsewhere: (dir) => shim.mcfs_listing_make_elsewhere(dir),
    },
    spaceFloor: (bytes) => shim.mcfs_space_floor(BigInt(bytes)),
    ioCounters() {
      const c = new BigUint64Array(IO_COUNTERS.length);
      shim.mcfs_io_counters(c);
      const at = (k: keyof IoCounters) => Number(c[IO_COUNTERS.indexOf(k)]);
      return { readOps: at("readOps"), readBytes: at("readBytes"), writeOps: at("writeOps"), writeBytes: at("writeBytes"), passthroughOpens: at("passthroughOpens"), passthroughShared: at("passthroughShared") };
    },
  };
}
