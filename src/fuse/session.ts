import { ptr } from "bun:ffi";
import { loadShim, type Shim } from "./native.ts";
import { accessSync, constants } from "node:fs";
import { detachMount, findMount, stillMounted } from "./mountpoint.ts";
import { isRoot } from "./fusermount.ts";
import type { Attr, Caller, DirEntry, FileSystem, SetAttr } from "./types.ts";
import { E, toErrno } from "../util/errno.ts";

const OP = {
  LOOKUP: 1, GETATTR: 2, SETATTR: 3, READLINK: 4, MKNOD: 5, MKDIR: 6, UNLINK: 7, RMDIR: 8, SYMLINK: 9,
  RENAME: 10, LINK: 11, OPEN: 12, READ: 13, WRITE: 14, FLUSH: 15, RELEASE: 16, FSYNC: 17, OPENDIR: 18,
  READDIR: 19, RELEASEDIR: 20, FSYNCDIR: 21, STATFS: 22, SETXATTR: 23, GETXATTR: 24, LISTXATTR: 25,
  REMOVEXATTR: 26, ACCESS: 27, CREATE: 28, READDIRPLUS: 29,
} as const;

export const OP_NAMES: Record<number, string> = Object.fromEntries(Object.entries(OP).map(([k, v]) => [v, k.toLowerCase()]));

// FUSE_SET_ATTR_* bits
const SA_MODE = 1, SA_UID = 2, SA_GID = 4, SA_SIZE = 8, SA_ATIME = 16, SA_MTIME = 32, SA_ATIME_NOW = 128, SA_MTIME_NOW = 256, SA_CTIME = 1024;

const HDR = 120; // struct rec: 10 x u32 + 10 x u64
const A_N = 15;

export interface SessionOptions {
  mountPoint: string;
  /** -o options for the mount (fsname, allow_other, default_permissions, ...). */
  options: string[];
  debug?: boolean;
  singleThread?: boolean;
  entryTimeout: number;
  attrTimeout: number;
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
  invalidateEntry(parent: number, name: string): void;
  invalidateInode(ino: number): void;
  /** Forget the kernel's cached attributes of ino (its pages stay). */
  invalidateAttrs(ino: number): void;
  /** Resolves once every invalidation asked for so far has reached the kernel. */
  flushInvalidations(): Promise<void>;
  /** Whether this session's mount is still in /proc/self/mountinfo (a stop that could not unmount leaves it). */
  isMounted(): boolean;
  /** Reads and writes the shim served from local files (they never reach JS). */
  ioCounters(): IoCounters;
  readonly closed: Promise<void>;
}

export interface IoCounters {
  readOps: number;
  readBytes: number;
  writeOps: number;
  writeBytes: number;
}

const enc = new TextEncoder();
/**
 * Names are kept as text (Redis keys, JSON): one that is not UTF-8 cannot be stored as it is, and a
 * lossy decoding would make different names one. Such a name is refused (EILSEQ), never changed.
 */
const dec = new TextDecoder("utf-8", { fatal: true });

function packAttr(a: Attr, out: BigInt64Array, o = 0): void {
  out[o] = BigInt(a.ino);
  out[o + 1] = BigInt(a.mode);
  out[o + 2] = BigInt(a.nlink);
  out[o + 3] = BigInt(a.uid);
  out[o + 4] = BigInt(a.gid);
  out[o + 5] = BigInt(a.rdev);
  out[o + 6] = BigInt(a.size);
  out[o + 7] = BigInt(Math.ceil(a.size / 512));
  out[o + 8] = a.atime / 1_000_000_000n;
  out[o + 9] = a.atime % 1_000_000_000n;
  out[o + 10] = a.mtime / 1_000_000_000n;
  out[o + 11] = a.mtime % 1_000_000_000n;
  out[o + 12] = a.ctime / 1_000_000_000n;
  out[o + 13] = a.ctime % 1_000_000_000n;
  out[o + 14] = 4096n;
}

function cstr(s: string): Uint8Array {
  const b = new Uint8Array(Buffer.byteLength(s) + 1);
  enc.encodeInto(s, b);
  return b;
}

/** Mount at opts.mountPoint (made ready by prepareMountpoint) and serve fs there. */
export async function startFuseSession(fs: FileSystem, opts: SessionOptions): Promise<FuseSession> {
  const shim: Shim = await loadShim();
  const wakeFd = shim.mcfs_start(ptr(cstr(opts.mountPoint)), ptr(cstr(opts.options.join(","))), opts.debug ? 1 : 0, opts.singleThread ? 1 : 0);
  if (wakeFd < 0) throw new Error(`cannot mount FUSE at ${opts.mountPoint}: ${-wakeFd === E.EIO ? mountFailure() : `errno ${-wakeFd}`}`);
  const conn = findMount(opts.mountPoint)?.minor ?? -1;

  const attrBuf = new BigInt64Array(A_N);
  // Room for the largest request (a 1 MiB write with its header) and a batch of small ones.
  const pollBuf = new Uint8Array(4 << 20);
  const view = new DataView(pollBuf.buffer);
  let stopped = false;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => (resolveClosed = r));
  // A pipe reader keeps the event loop alive while mounted; no timers, no polling.
  const reader = Bun.file(wakeFd).stream().getReader();

  const entryTo = opts.entryTimeout, attrTo = opts.attrTimeout;

  function replyEntry(id: number, a: Attr) {
    packAttr(a, attrBuf);
    shim.mcfs_reply_entry(id, ptr(attrBuf), entryTo, attrTo);
  }
  function replyAttr(id: number, a: Attr) {
    packAttr(a, attrBuf);
    shim.mcfs_reply_attr(id, ptr(attrBuf), attrTo);
  }
  function openFlags(o: { directIo?: boolean; keepCache?: boolean }) {
    return (o.directIo ? 1 : 0) | (o.keepCache ? 2 : 0);
  }

  function replyDir(id: number, size: number, plus: boolean, ents: DirEntry[]) {
    let bytes = 0;
    const names = ents.map((e) => enc.encode(e.name));
    for (const n of names) bytes += (A_N + 2) * 8 + ((n.length + 1 + 7) & ~7);
    const buf = new ArrayBuffer(Math.max(bytes, 8));
    const i64 = new BigInt64Array(buf);
    const u8 = new Uint8Array(buf);
    let off = 0;
    for (let i = 0; i < ents.length; i++) {
      const e = ents[i]!, n = names[i]!;
      packAttr(e.attr, i64, off / 8);
      i64[off / 8 + A_N] = BigInt(e.next);
      i64[off / 8 + A_N + 1] = BigInt(n.length + 1);
      u8.set(n, off + (A_N + 2) * 8);
      off += (A_N + 2) * 8 + ((n.length + 1 + 7) & ~7);
    }
    shim.mcfs_reply_dir(id, size, plus ? 1 : 0, ptr(u8), ents.length, entryTo, attrTo);
  }

  function setAttrOf(valid: number, size: number, mode: number, uidgid: bigint, at: bigint, atn: bigint, mt: bigint, mtn: bigint): SetAttr {
    const s: SetAttr = {};
    if (valid & SA_MODE) s.mode = mode;
    if (valid & SA_UID) s.uid = Number(uidgid >> 32n);
    if (valid & SA_GID) s.gid = Number(uidgid & 0xffffffffn);
    if (valid & SA_SIZE) s.size = size;
    if (valid & SA_ATIME) s.atime = valid & SA_ATIME_NOW ? "now" : at * 1_000_000_000n + atn;
    if (valid & SA_MTIME) s.mtime = valid & SA_MTIME_NOW ? "now" : mt * 1_000_000_000n + mtn;
    if (valid & SA_CTIME) s.ctime = 0n;
    return s;
  }

  async function handle(op: number, id: number, c: Caller, ino: number, fh: number, a: bigint, b: bigint, rest: bigint[], name: string, name2: string, data: Uint8Array) {
    switch (op) {
      case OP.LOOKUP: return replyEntry(id, await fs.lookup(c, ino, name));
      case OP.GETATTR: return replyAttr(id, await fs.getattr(c, ino, a ? fh : undefined));
      case OP.SETATTR: {
        const valid = Number(a & 0xffffffffn);
        const hasFh = (a >> 32n) & 1n;
        const [cc, d, e, f, g, h] = rest as [bigint, bigint, bigint, bigint, bigint, bigint];
        const s = setAttrOf(valid, Number(b), Number(cc >> 32n), d, e, f, g, h);
        return replyAttr(id, await fs.setattr(c, ino, s, hasFh ? fh : undefined));
      }
      case OP.READLINK: return void shim.mcfs_reply_readlink(id, ptr(cstr(await fs.readlink(c, ino))));
      case OP.MKNOD: return replyEntry(id, await fs.mknod(c, ino, name, Number(a), Number(b)));
      case OP.MKDIR: return replyEntry(id, await fs.mkdir(c, ino, name, Number(a)));
      case OP.UNLINK: await fs.unlink(c, ino, name); return void shim.mcfs_reply_err(id, 0);
      case OP.RMDIR: await fs.rmdir(c, ino, name); return void shim.mcfs_reply_err(id, 0);
      case OP.SYMLINK: return replyEntry(id, await fs.symlink(c, ino, name, name2));
      case OP.RENAME: await fs.rename(c, ino, name, Number(a), name2, Number(b)); return void shim.mcfs_reply_err(id, 0);
      case OP.LINK: return replyEntry(id, await fs.link(c, ino, Number(a), name));
      case OP.OPEN: {
        const o = await fs.open(c, ino, Number(a));
        if (shim.mcfs_reply_open(id, o.fh, o.fd ?? -1, openFlags(o)) !== 0) await fs.release(c, ino, o.fh, false);
        return;
      }
      case OP.CREATE: {
        const r = await fs.create(c, ino, name, Number(b), Number(a));
        packAttr(r.attr, attrBuf);
        if (shim.mcfs_reply_create(id, ptr(attrBuf), entryTo, attrTo, r.open.fh, r.open.fd ?? -1, openFlags(r.open)) !== 0) await fs.release(c, r.attr.ino, r.open.fh, false);
        return;
      }
      case OP.READ: {
        const d = await fs.read(c, ino, fh, Number(a), Number(b));
        return void shim.mcfs_reply_buf(id, d.length ? ptr(d) : null, d.length);
      }
      case OP.WRITE: return void shim.mcfs_reply_write(id, await fs.write(c, ino, fh, Number(a), data));
      case OP.FLUSH: await fs.flush(c, ino, fh, a !== 0n); return void shim.mcfs_reply_err(id, 0);
      case OP.RELEASE: shim.mcfs_clear_fh(fh); await fs.release(c, ino, fh, a !== 0n); return void shim.mcfs_reply_err(id, 0);
      case OP.FSYNC: await fs.fsync(c, ino, fh, a !== 0n, b !== 0n); return void shim.mcfs_reply_err(id, 0);
      case OP.OPENDIR: return void shim.mcfs_reply_open(id, await fs.opendir(c, ino), -1, 0);
      case OP.READDIR:
      case OP.READDIRPLUS: {
        const plus = op === OP.READDIRPLUS;
        const size = Number(b);
        // Upper bound on what fits, so a huge directory is not fetched whole for each call.
        const max = Math.max(1, Math.floor(size / (plus ? 136 : 32)));
        return replyDir(id, size, plus, await fs.readdir(c, ino, fh, Number(a), max, plus));
      }
      case OP.RELEASEDIR: await fs.releasedir(c, ino, fh); return void shim.mcfs_reply_err(id, 0);
      case OP.FSYNCDIR: return void shim.mcfs_reply_err(id, 0);
      case OP.STATFS: {
        const s = await fs.statfs(c, ino);
        const v = new BigUint64Array([s.bsize, s.frsize, s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.favail, s.namemax].map((x) => BigInt(Math.max(0, Math.floor(x)))));
        return void shim.mcfs_reply_statfs(id, ptr(v));
      }
      case OP.SETXATTR: await fs.setxattr(c, ino, name, data, Number(a)); return void shim.mcfs_reply_err(id, 0);
      case OP.GETXATTR: return replySized(id, Number(a), await fs.getxattr(c, ino, name));
      case OP.LISTXATTR: {
        const names = await fs.listxattr(c, ino);
        return replySized(id, Number(a), enc.encode(names.map((n) => n + "\0").join("")));
      }
      case OP.REMOVEXATTR: await fs.removexattr(c, ino, name); return void shim.mcfs_reply_err(id, 0);
      case OP.ACCESS: await fs.access(c, ino, Number(a)); return void shim.mcfs_reply_err(id, 0);
      default: return void shim.mcfs_reply_err(id, E.ENOSYS);
    }
  }

  function replySized(id: number, size: number, v: Uint8Array) {
    if (size === 0) shim.mcfs_reply_xattr(id, v.length);
    else if (v.length > size) shim.mcfs_reply_err(id, E.ERANGE);
    else shim.mcfs_reply_buf(id, v.length ? ptr(v) : null, v.length);
  }

  function dispatch(op: number, id: number, c: Caller, ino: number, fh: number, a: bigint, b: bigint, rest: bigint[], name: string, name2: string, data: Uint8Array) {
    const t0 = opts.onOp ? performance.now() : 0;
    const done = (errno: number) => opts.onOp?.(OP_NAMES[op] ?? String(op), (performance.now() - t0) / 1000, errno, ino, name);
    let p: Promise<void>;
    try {
      p = handle(op, id, c, ino, fh, a, b, rest, name, name2, data);
    } catch (e) {
      p = Promise.reject(e);
    }
    p.then(
      () => done(0),
      (e: unknown) => {
        const errno = toErrno(e);
        shim.mcfs_reply_err(id, errno);
        done(errno);
      },
    );
  }

  function drain() {
    for (;;) {
      const n = shim.mcfs_poll(ptr(pollBuf), pollBuf.length);
      if (n <= 0) return;
      let o = 0;
      while (o < n) {
        const len = view.getUint32(o, true);
        const id = view.getUint32(o + 4, true);
        const op = view.getUint32(o + 8, true);
        const c: Caller = { uid: view.getUint32(o + 12, true), gid: view.getUint32(o + 16, true), pid: view.getUint32(o + 20, true) };
        const n1 = view.getUint32(o + 24, true), n2 = view.getUint32(o + 28, true), dl = view.getUint32(o + 32, true);
        const ino = Number(view.getBigUint64(o + 40, true));
        const fh = Number(view.getBigUint64(o + 48, true));
        const a = view.getBigUint64(o + 56, true);
        const b = view.getBigUint64(o + 64, true);
        const rest = op === OP.SETATTR ? [0, 1, 2, 3, 4, 5].map((i) => view.getBigUint64(o + 72 + i * 8, true)) : [];
        let p = o + HDR;
        let name: string, name2: string;
        try {
          name = n1 ? dec.decode(pollBuf.subarray(p, p + n1 - 1)) : "";
          name2 = n2 ? dec.decode(pollBuf.subarray(p + n1, p + n1 + n2 - 1)) : "";
        } catch {
          // No such name can exist here; making one is refused.
          shim.mcfs_reply_err(id, op === OP.LOOKUP ? E.ENOENT : E.EILSEQ);
          o += len;
          continue;
        }
        p += n1 + n2;
        const data = dl ? pollBuf.slice(p, p + dl) : new Uint8Array(0);
        dispatch(op, id, c, ino, fh, a, b, rest, name, name2, data);
        o += len;
      }
    }
  }

  /** Callers waiting for the notifier thread to reach a number of invalidations. */
  let flushWaiters: { upTo: number; resolve: () => void }[] = [];
  function settleFlushes(all = false) {
    if (!flushWaiters.length) return;
    const done = Number(shim.mcfs_notes_done());
    flushWaiters = flushWaiters.filter((w) => (all || w.upTo <= done ? (w.resolve(), false) : true));
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
        if (r.done) break;
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
      if (stopped) return;
      stopped = true;
      const unmountFailed = detach();
      const rc = shim.mcfs_stop(conn, timeoutMs);
      if (rc !== 0) throw new Error(`FUSE session at ${opts.mountPoint} did not stop within ${timeoutMs} ms${unmountFailed ? ` (${unmountFailed.message})` : ""}`);
      await reader.cancel().catch(() => {});
      settleFlushes(true);
      resolveClosed();
      if (unmountFailed) throw unmountFailed;
    },
    isMounted: () => stillMounted(opts.mountPoint, conn),
    invalidateEntry(parent, name) {
      shim.mcfs_inval_entry(parent, ptr(cstr(name)));
    },
    invalidateInode(ino) {
      shim.mcfs_inval_inode(ino);
    },
    invalidateAttrs(ino) {
      shim.mcfs_inval_attrs(ino);
    },
    flushInvalidations() {
      const upTo = Number(shim.mcfs_notes_pushed());
      if (stopped || Number(shim.mcfs_notes_done()) >= upTo) return Promise.resolve();
      return new Promise<void>((resolve) => flushWaiters.push({ upTo, resolve }));
    },
    ioCounters() {
      const c = new BigUint64Array(4);
      shim.mcfs_io_counters(ptr(c));
      return { readOps: Number(c[0]), readBytes: Number(c[1]), writeOps: Number(c[2]), writeBytes: Number(c[3]) };
    },
  };
}
