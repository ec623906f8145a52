import type { Inode } from "../meta/store.ts";
import { fsError } from "../util/errno.ts";
import type { RangeReader } from "./remote-data.ts";
import { OVERWRITE_SERVED_AFTER_MS } from "./remote/changing-wait.ts";

export interface Handle {
  ino: number;
  /** The local copy, or -1 while ranges of a big remote file are read from its holder. */
  fd: number;
  ranges?: RangeReader;
  /** Bytes of its version were read through ranges, or handed to the shim to read: see RangeReader.read's untouched. */
  rangesRead?: boolean;
  writable: boolean;
  /** Written through JS (the shim reports its own writes at flush). */
  dirty: boolean;
  /**
   * A writer's: its app closed it (its last flush published what it wrote; nothing was written
   * through JS since). Its release is on its way, and may come after the kernel's next open of the
   * file; or the app holds a duplicate of the descriptor, whose writes are seen at its next flush.
   */
  closed?: boolean;
  /** A writer's on a cluster node: it holds a share of this node's turn to write the file (WriteTurns), given back at its app's close. */
  turn?: boolean;
  /** A writer's: the path its file had in this node's root when it was opened, or last published. */
  at?: string;
  /**
   * Read-only: the version whose bytes it reads, that version's size, and whether they are a copy of
   * another node's file (cached, arriving, or read in ranges from it) rather than this node's own.
   */
  reads?: { version: number; size: number; copy: boolean };
  /** Another version was opened here since: its next read reopens the version read here now (see FileOps.read). */
  superseded?: boolean;
  /**
   * The size of a longer version it read before it moved to a shorter one (cut on another node):
   * its kernel was given that size, and keeps it while the file is open here.
   */
  cutFrom?: number;
  /** A read across the shorter version's end was answered: its kernel was told that end (see FileOps.read). */
  cutTold?: boolean;
  /** That reopen, under way. */
  reopening?: Promise<void>;
  /** What it read before it was reopened: closed at its release. */
  retired?: { fd: number; ranges?: RangeReader }[];
}

export interface DirHandle {
  /** The directory. */
  ino: number;
  /** Its listing when opened. */
  entries: { name: string; ino: number; type: number }[];
  /**
   * Names that came or went since (here, or heard from other nodes), with how many times: what a
   * message says is not used as is, since messages of two nodes may arrive in the other order than
   * their changes were made, and one may tell of a change made before the listing was read.
   */
  changed: Map<string, number>;
  /** Its record as last known here: what it answers with once removed (its record gone from the store). */
  rec?: Inode;
  /** A readdir was answered: one from offset 0 again reads the listing again. */
  served?: boolean;
}

/** An inode open on this node: its handles, and its record (this node is where it changes). */
export interface OpenInode {
  /** Each handle, and its number. */
  handles: Map<Handle, number>;
  rec: Inode;
  /** The version this node last published of its own file while the inode was open here. */
  ownVersion?: number;
  /**
   * The versions published (an fsync, the close of one of their handles) while writers have stayed
   * open since one opened the closed file (their apps have not closed them all: see
   * OpenFiles.writing), and their sizes: the bytes of each are the file's as they
   * go on writing it. A reader elsewhere may take longer to fetch one than a writer to publish the
   * next (a log fsynced at each line): the last LIVE_KEPT are kept.
   */
  live?: Map<number, number>;
  /** The closed version writers opened in place, its size, and when (see OpenFiles.overwriting). */
  overwritten?: { version: number; size: number; since: number };
  /**
   * The newest state of the local file a commit published (after a cut: past any). What the shim
   * found at a flush may have been overtaken by another of its threads' later look queued first: a
   * commit takes it only when it is no older by ctime and size (a passthrough writer's writes never
   * shrink the file; cuts come through JS), else it looks at the file itself.
   */
  committed?: LocalState;
}

/** A local file's change time (ns) and size. */
export interface LocalState {
  ctimeNs: bigint;
  size: number;
}

/** Past any state: the commit after a cut looks at the file itself. */
export const CUT_STATE: LocalState = { ctimeNs: 1n << 64n, size: Number.MAX_SAFE_INTEGER };

const LIVE_KEPT = 1024;

/** A writer's open under way (see OpenFiles.writerOpens). */
export interface WriterOpening {
  /** The newest version this node published of the file since the open began, and its size. */
  readonly latest: { version: number; size: number } | undefined;
  /** Its handle was added, or the open failed. */
  done(): void;
}

/** Note version, of size bytes, published while writers stay open. */
function publishedLive(o: OpenInode, version: number, size: number): void {
  o.live ??= new Map();
  o.live.set(version, size);
  if (o.live.size > LIVE_KEPT) o.live.delete(o.live.keys().next().value!);
}

/** The size at which version is served from the file its writers have open, if it is (see OpenFiles.steady). */
function servedLive(o: OpenInode, version: number, asWritten: boolean): number | undefined {
  const size = o.live?.get(version);
  if (size !== undefined) return size;
  const w = o.overwritten;
  return asWritten && w?.version === version && Date.now() - w.since >= OVERWRITE_SERVED_AFTER_MS ? w.size : undefined;
}

/**
 * What is open on this node: file and directory handles by number, inodes by number, and when writes
 * of their root files began (the bytes of a published version change in place under a writer, and a
 * peer reading them must know).
 */
export interface OpenFiles {
  readonly count: number;
  /** fh: a number reserved for it (reserveFh), else one is taken. Returns its number. */
  add(h: Handle, rec: Inode, fh?: number): number;
  /** A handle number no other handle gets, for add later (the shim's creates answer with it first). */
  reserveFh(): number;
  /** The handle of fh; EBADF if none. */
  get(fh: number): Handle;
  find(fh: number): Handle | undefined;
  /** Forget fh; returns the inode's entry when this was its last handle (it is gone then). */
  remove(fh: number, h: Handle): { last: boolean };
  /** Resolves true once no handle of ino that matches is open here, or false after ms. */
  closedOf(ino: number, match: (h: Handle) => boolean, ms: number): Promise<boolean>;
  inode(ino: number): OpenInode | undefined;
  /** Whether a handle open here (other than except) writes ino. */
  hasWriter(ino: number, except?: Handle): boolean;
  /**
   * Whether a writer's handle here whose app has not closed it writes ino. With none, the version
   * the last close published is closed: a writer opening it now opens a closed file (see
   * writerOpens).
   */
  writing(ino: number): boolean;
  /**
   * A writer's open of ino begins (before it reads the record). With no writer here, the versions
   * published so far stop being served as written (the file changes from now on, with no publish of
   * this writer's); those published while the open runs (the close of a closed writer's duplicate
   * in another process) are served so once it is open, even if their handles went meanwhile.
   */
  writerOpens(ino: number): WriterOpening;
  /** This node published version of ino's own file, of size bytes, from a handle open here. */
  published(ino: number, version: number, size: number): void;
  /** An fd open here on this node's own file of ino (a writer's, or a reader's of it; not a copy's). */
  localFd(ino: number): number | undefined;
  /** The fd of a handle open here writing ino (this node's own file). */
  writerFd(ino: number): number | undefined;
  /** A write of ino's root file begins here outside a handle (a truncate by path). */
  beginWrite(ino: number): void;
  /** A write of ino's root file outside a handle (a truncate by path) is under way until the returned call. */
  writeOutside(ino: number): () => void;
  /** Whether such a write of ino is under way. */
  writingOutside(ino: number): boolean;
  /**
   * A check, true while no write of ino's root file has begun here since this call (false from the
   * start if one is under way). Given a version: a publish of it while writers stay open (see
   * OpenInode.live), or the closed version they opened in place (see overwriting), holds as long as
   * they do, and their later publishes; a reader of it may see their writes since, as one of a file
   * being written on one node would; the closed version only to a reader that keeps no copy
   * (asWritten: a read of a range), never to a copy made of it (kept, served on, or written on).
   */
  steady(ino: number, version?: number, asWritten?: boolean): () => boolean;
  /** The size version had when published, if the file is served as it is being written (see steady). */
  liveSize(ino: number, version: number, asWritten?: boolean): number | undefined;
  /**
   * The first writer of ino opened its closed version r in place (no O_TRUNC): once writers have had
   * it open for OVERWRITE_SERVED_AFTER_MS, that version is served as it is being written to readers
   * of ranges (see steady).
   */
  overwriting(ino: number, r: Inode): void;
  addDir(d: DirHandle): number;
  dir(fh: number): DirHandle;
  removeDir(fh: number): void;
  /** A name left or joined a directory: its open handles note it. */
  dirChanged(dir: number, add?: [string, number], remove?: string): void;
  /** The record of directory ino, if open here. */
  dirRecord(ino: number): Inode | undefined;
  /** Directory ino's record changed while open here (with no record left in the store, it changes only here). */
  setDirRecord(r: Inode): void;
  /** Every file handle, to close them all at shutdown. */
  all(): IterableIterator<[number, Handle]>;
  clear(): void;
}

/** Write stamps kept per inode before the oldest are forgotten (into a floor every check respects). */
const STAMPS_MAX = 200_000;

/** opened: an inode was opened here (its attributes are the open file's from now on). */
export function createOpenFiles(opened?: (ino: number) => void): OpenFiles {
  const handles = new Map<number, Handle>();
  const byIno = new Map<number, OpenInode>();
  const dirs = new Map<number, DirHandle>();
  const dirsByIno = new Map<number, Set<DirHandle>>();
  let nextFh = 1;
  const freeFh: number[] = [];
  const allocFh = () => freeFh.pop() ?? nextFh++;

  /** Opens waiting for handles of an inode to close (closedOf), each checking again at every close. */
  const closeWaits = new Map<number, Set<() => void>>();
  const writeBegun = new Map<number, number>();
  /** What each writer's open under way saw published, by inode (WriterOpening). */
  const openings = new Map<number, Set<Map<number, number>>>();
  const outside = new Map<number, number>();
  let writeStamp = 0;
  let writeFloor = 0;
  function beginWrite(ino: number): void {
    if (writeBegun.size >= STAMPS_MAX) {
      writeBegun.clear();
      writeFloor = writeStamp;
    }
    writeBegun.set(ino, ++writeStamp);
  }
  function hasWriter(ino: number, except?: Handle): boolean {
    for (const h of byIno.get(ino)?.handles.keys() ?? []) if (h !== except && h.writable) return true;
    return false;
  }
  function writing(ino: number): boolean {
    for (const h of byIno.get(ino)?.handles.keys() ?? []) if (h.writable && !h.closed) return true;
    return false;
  }

  return {
    get count() {
      return handles.size;
    },
    reserveFh: allocFh,
    add(h, rec, reserved) {
      const fh = reserved ?? allocFh();
      if (h.writable) beginWrite(h.ino);
      handles.set(fh, h);
      let o = byIno.get(h.ino);
      if (!o) {
        byIno.set(h.ino, (o = { handles: new Map(), rec }));
        opened?.(h.ino);
      }
      o.handles.set(h, fh);
      return fh;
    },
    get(fh) {
      const h = handles.get(fh);
      if (!h) throw fsError("EBADF");
      return h;
    },
    find: (fh) => handles.get(fh),
    remove(fh, h) {
      handles.delete(fh);
      freeFh.push(fh);
      const o = byIno.get(h.ino);
      o?.handles.delete(h);
      const waits = closeWaits.get(h.ino);
      if (waits) for (const check of [...waits]) check();
      if (!o || o.handles.size > 0) return { last: false };
      byIno.delete(h.ino);
      return { last: true };
    },
    closedOf(ino, match, ms) {
      const open = () => {
        for (const h of byIno.get(ino)?.handles.keys() ?? []) if (match(h)) return true;
        return false;
      };
      if (!open()) return Promise.resolve(true);
      return new Promise((resolve) => {
        let waits = closeWaits.get(ino);
        if (!waits) closeWaits.set(ino, (waits = new Set()));
        const done = (closed: boolean) => {
          clearTimeout(timer);
          waits.delete(check);
          if (!waits.size && closeWaits.get(ino) === waits) closeWaits.delete(ino);
          resolve(closed);
        };
        const check = () => {
          if (!open()) done(true);
        };
        const timer = setTimeout(() => done(false), ms);
        waits.add(check);
      });
    },
    inode: (ino) => byIno.get(ino),
    hasWriter,
    writing,
    writerOpens(ino) {
      const o = byIno.get(ino);
      if (o && !writing(ino)) {
        delete o.live;
        delete o.overwritten;
      }
      const seen = new Map<number, number>();
      let all = openings.get(ino);
      if (!all) openings.set(ino, (all = new Set()));
      all.add(seen);
      return {
        get latest() {
          let last: { version: number; size: number } | undefined;
          for (const [version, size] of seen) last = { version, size };
          return last;
        },
        done() {
          if (!all.delete(seen)) return;
          if (!all.size) openings.delete(ino);
          const o = byIno.get(ino);
          if (o) for (const [version, size] of seen) publishedLive(o, version, size);
        },
      };
    },
    published(ino, version, size) {
      const o = byIno.get(ino);
      if (o) publishedLive(o, version, size);
      for (const seen of openings.get(ino) ?? []) seen.set(version, size);
    },
    localFd(ino) {
      for (const h of byIno.get(ino)?.handles.keys() ?? []) if (h.fd >= 0 && (h.writable || h.reads?.copy === false)) return h.fd;
      return undefined;
    },
    writerFd(ino) {
      for (const h of byIno.get(ino)?.handles.keys() ?? []) if (h.fd >= 0 && h.writable) return h.fd;
      return undefined;
    },
    beginWrite,
    writeOutside(ino) {
      beginWrite(ino);
      outside.set(ino, (outside.get(ino) ?? 0) + 1);
      let ended = false;
      return () => {
        if (ended) return;
        ended = true;
        const n = (outside.get(ino) ?? 1) - 1;
        if (n > 0) outside.set(ino, n);
        else outside.delete(ino);
      };
    },
    writingOutside: (ino) => outside.has(ino),
    steady(ino, version, asWritten = false) {
      const at = writeStamp;
      if (writing(ino)) {
        const o = byIno.get(ino);
        if (!o || version === undefined || servedLive(o, version, asWritten) === undefined) return () => false;
        const live = o.live;
        if (live?.has(version)) return () => byIno.get(ino) === o && o.live === live && live.has(version);
        const w = o.overwritten;
        return () => byIno.get(ino) === o && o.overwritten === w;
      }
      return () => (writeBegun.get(ino) ?? writeFloor) <= at && !writing(ino);
    },
    liveSize(ino, version, asWritten = false) {
      const o = byIno.get(ino);
      return o && writing(ino) ? servedLive(o, version, asWritten) : undefined;
    },
    overwriting(ino, r) {
      const o = byIno.get(ino);
      if (o) o.overwritten = { version: r.version, size: r.size, since: Date.now() };
    },
    addDir(d) {
      const fh = allocFh();
      dirs.set(fh, d);
      let same = dirsByIno.get(d.ino);
      if (!same) dirsByIno.set(d.ino, (same = new Set()));
      same.add(d);
      return fh;
    },
    dir(fh) {
      const d = dirs.get(fh);
      if (!d) throw fsError("EBADF");
      return d;
    },
    removeDir(fh) {
      const d = dirs.get(fh);
      if (!d) return;
      dirs.delete(fh);
      const same = dirsByIno.get(d.ino);
      same?.delete(d);
      if (same?.size === 0) dirsByIno.delete(d.ino);
      freeFh.push(fh);
    },
    dirChanged(dir, add, remove) {
      for (const d of dirsByIno.get(dir) ?? []) {
        for (const name of [remove, add?.[0]]) if (name !== undefined) d.changed.set(name, (d.changed.get(name) ?? 0) + 1);
      }
    },
    dirRecord(ino) {
      for (const d of dirsByIno.get(ino) ?? []) if (d.rec) return d.rec;
      return undefined;
    },
    setDirRecord(r) {
      for (const d of dirsByIno.get(r.ino) ?? []) d.rec = r;
    },
    all: () => handles.entries(),
    clear() {
      handles.clear();
      byIno.clear();
    },
  };
}
