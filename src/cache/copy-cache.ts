import * as fs from "node:fs";
import { E, FsError } from "../util/errno.ts";
import { byteLength, writePieces, writePiecesSync, type Pieces } from "../util/bytes.ts";
import type { LocalDir } from "../local/local-dir.ts";
import { createMemfd, dupFd, sealMemfd } from "./memfd.ts";
import { filePool } from "../local/file-pool.ts";
import { createKeyedQueue } from "../util/keyed-queue.ts";

const { O_RDONLY, O_RDWR, O_CREAT, O_EXCL } = fs.constants;

/**
 * Copies of other nodes' files, in two tiers: small files in RAM (each in a memfd, so that an open
 * hands the shim a fd and reads never cross into JS; the tier holds at most ramMaxFiles of them, as
 * each holds a file descriptor), the rest on disk. One copy per inode, named by its data version, so
 * a copy is only ever served for the version it holds.
 * Least recently used copies are evicted to keep each tier within its size; copies on their way cannot
 * be, so a tier held by them refuses a new copy rather than overshoot.
 *
 * A RAM copy pushed out by newer ones moves to the disk tier when that has room (it evicts its own least
 * recently used for it): a workflow whose inputs outgrow the RAM tier reads them again from this
 * node's disk, not from their holder. Its bytes are copied by the kernel on the file pool's threads.
 *
 * A copy fetched ahead (before anyone asked for it) is marked until its first open: such copies may
 * take half their tier, and those evicted unopened are counted, bytes moved for nothing. Until newer
 * copies as large as its tier have arrived there, an unopened one is evicted only after every other
 * copy: a workflow reads most files once, so a copy just read is worth less than one about to be
 * (plain LRU evicted a sequential reader's next files for the ones it had done with). Past that it
 * is stale (its reader went elsewhere): it stops holding the read-ahead budget and ages as any copy.
 */
export interface CopyCache {
  /** The copy of ino at version as a new read-only fd, the caller's to close; marks it used unless use is false. */
  open(ino: number, version: number, use?: boolean): Opened | undefined;
  /** An open of the copy of ino at version made elsewhere (the shim's, from a grant): marks it used; true if it was fetched ahead and this is its first open. */
  use(ino: number, version: number): boolean;
  has(ino: number, version: number): boolean;
  /** Version of the copy of ino held, if any. */
  versionOf(ino: number): number | undefined;
  /** Whether a copy of this many bytes fits in a tier at all. */
  fits(size: number): boolean;
  /**
   * Start a copy: room is made by evicting old copies; bytes go into it until commit or abort.
   * undefined: no room, the tier being held by copies on their way (or, for a copy fetched ahead,
   * by copies fetched ahead and not opened yet).
   */
  begin(ino: number, version: number, size: number, ahead?: boolean): PendingCopy | undefined;
  /** Resolves once a copy on its way is committed or aborted (its room may be free), at once if none is. */
  settled(): Promise<void>;
  usage(): TierUsage[];
  ahead(): AheadUsage;
  /** Evict every copy (each unlisted through onEvict). */
  dropAll(): void;
  close(): void;
}

export interface CopyData {
  fd: number;
}
/** ahead: the copy was fetched ahead and this is its first open. */
export type Opened = CopyData & { ahead?: true };

/** Copies fetched ahead, in all tiers. */
export interface AheadUsage {
  /** Bytes of those not opened yet (on their way or committed). */
  bytes: number;
  /** How many bytes of them the tier that takes small files may hold. */
  limit: number;
  /** Bytes of those evicted before anyone opened them, since start. */
  evictedUnread: number;
}

/** Bytes of a cached copy at an offset (fewer only at its end). */
export function readCopy(c: CopyData, into: Uint8Array, at: number): number {
  return fs.readSync(c.fd, into, 0, into.length, at);
}

export interface PendingCopy {
  /**
   * Settles once the copy has its descriptor: at once in RAM; a disk copy's file is made on the file
   * pool (a create cost 0.3-1.2 ms of the event loop here). Rejects, the copy aborted, if it cannot be made.
   */
  readonly ready: Promise<void>;
  /** Into RAM at once; to disk on a worker thread (the promise), after ready. Past the announced size: EIO. */
  write(data: Pieces, at: number): void | Promise<void>;
  /** The descriptor the copy is written to, once ready: a reader following it as it arrives reads what was written. */
  readonly fd: number;
  /** n bytes at at were written through a descriptor of fd's own (by the file threads), after ready. Past the announced size: EIO. */
  landed(at: number, n: number): void;
  /** After ready (a disk copy's bytes are written after it). */
  commit(): void;
  abort(): void;
}

export interface TierUsage {
  tier: "ram" | "disk";
  bytes: number;
  files: number;
  limit: number;
}

export interface CopyCacheOptions {
  /** Directory of the disk tier, this node's alone (emptied at start). */
  dir: LocalDir;
  ramBytes: number;
  /** Largest file kept in RAM. */
  ramMaxFileBytes: number;
  /** Most copies kept in RAM (each holds a file descriptor). */
  ramMaxFiles: number;
  diskBytes: number;
  /** A copy was evicted: it must no longer be listed as a holder. */
  onEvict(ino: number, version: number, tier: "ram" | "disk"): void;
  /** A RAM copy moved to the disk tier (still held); failed: its bytes could not be written there, and it was evicted. */
  onDemote?(ino: number, failed: boolean): void;
}

/**
 * RAM copies moved to the disk tier at once, at most: past it an evicted copy is dropped. Each holds
 * three fds until its file is written (ramMaxFiles counts only the RAM tier's): a burst of copies
 * into a full RAM tier queued thousands of moves behind the file threads and ran the daemon out of fds.
 */
const DEMOTING_MAX = 64;

interface Entry {
  ino: number;
  version: number;
  size: number;
  /** RAM: the memfd holding the bytes, sealed (the cache's; readers get their own); also on disk until its file is written. */
  fd?: number;
  /** Disk: the file's name in the tier's directory. */
  file?: string;
  /** Fetched ahead and not opened yet. */
  ahead: boolean;
  /** The tier's clock once it arrived there. */
  arrived: number;
}

interface Tier {
  name: "ram" | "disk";
  limit: number;
  maxFiles: number;
  /** Committed copies by inode, least recently used first (Map order). */
  entries: Map<number, Entry>;
  /** Bytes of committed copies plus those being fetched. */
  used: number;
  /** Bytes and number of copies being fetched: they cannot be evicted. */
  pending: number;
  pendingFiles: number;
  /** Bytes of copies fetched ahead and not opened, being fetched or fresh. */
  ahead: number;
  /** Copies fetched ahead, not opened and not stale, in order of arrival: evicted last. */
  fresh: Map<number, Entry>;
  /** Bytes of copies that arrived in this tier, since start. */
  clock: number;
}

/**
 * A disk copy's bytes this far behind the furthest written are written out and dropped from the page
 * cache, a step at a time: its reader's kernel keeps them in the FUSE file's own page cache, so the
 * copy's would be a second copy of a big file in memory (on this machine's VM a page never touched
 * before, or handed back to the host, cost 2.8 s a GiB to touch: a 1 GiB first read across nodes
 * ran at 300 MB/s against 800 with warm pages). A copy smaller than both stays cached whole. The rest of
 * every disk copy is written out from its commit, and a copy part of which could not be written is
 * never served again.
 */
const DROP_BEHIND = 64 << 20;
const DROP_STEP = 32 << 20;

/** Copy files: ino.version.n, and ino.version.part-n on their way (ino.version from older runs). */
const COPY_NAME = /^\d+\.\d+(\.\d+|\.part-\d+)?$/;

export function createCopyCache(o: CopyCacheOptions): CopyCache {
  for (const f of o.dir.list("")) if (COPY_NAME.test(f.name)) o.dir.remove(`/${f.name}`);
  const tier = (name: Tier["name"], limit: number, maxFiles: number): Tier => ({ name, limit, maxFiles, entries: new Map(), used: 0, pending: 0, pendingFiles: 0, ahead: 0, fresh: new Map(), clock: 0 });
  const ram = tier("ram", o.ramBytes, o.ramMaxFiles);
  const disk = tier("disk", o.diskBytes, Infinity);
  let seq = 0;
  /** Each copy's file has a name of its own, and so has each on its way: a removal may run behind a new copy of the same version. */
  const copyFile = (ino: number, version: number) => {
    const n = ++seq;
    return { file: `/${ino}.${version}.${n}`, part: `/${ino}.${version}.part-${n}` };
  };
  /** On the file pool: unlinking a 1 GiB copy took 60-250 ms here. One that fails is removed at the next start. */
  const removeBehind = (p: string) => void o.dir.removeAsync(p).catch(() => {});
  /** filePool().writeOut one at a time: each waits on the disk, and the pool's other threads stay free for the creates and opens queued behind. */
  const writeOuts = createKeyedQueue<0>();
  const writeOut = (fd: number, at: number, length: number, drop: boolean) => writeOuts.run(0, () => filePool().writeOut(fd, at, length, drop));
  let evictedUnread = 0;
  let settleWaiters: (() => void)[] = [];
  const wakeSettled = () => {
    const w = settleWaiters;
    settleWaiters = [];
    for (const f of w) f();
  };

  /** Into tier's entries as its newest copy; an unopened one fetched ahead is fresh there. */
  function arrive(tier: Tier, e: Entry): void {
    tier.clock += e.size;
    e.arrived = tier.clock;
    tier.entries.set(e.ino, e);
    if (!e.ahead) return;
    tier.fresh.set(e.ino, e);
    tier.ahead += e.size;
  }

  /** No longer fresh: opened, gone, or stale. */
  function unfresh(tier: Tier, e: Entry): void {
    if (tier.fresh.delete(e.ino)) tier.ahead -= e.size;
  }

  /** e was opened: the most recently used of its tier; true if it was fetched ahead and this is its first open. */
  function used(tier: Tier, e: Entry): boolean {
    tier.entries.delete(e.ino);
    tier.entries.set(e.ino, e);
    if (!e.ahead) return false;
    e.ahead = false;
    unfresh(tier, e);
    return true;
  }

  /** Fresh copies after which newer copies as large as the tier arrived there are stale. */
  function age(tier: Tier): void {
    for (const e of tier.fresh.values()) {
      if (tier.clock - e.arrived < tier.limit) break;
      unfresh(tier, e);
    }
  }

  function release(tier: Tier, e: Entry, now = false): void {
    tier.entries.delete(e.ino);
    tier.used -= e.size;
    unfresh(tier, e);
    // Readers that opened the copy keep reading it through their own fd.
    if (e.file) now ? o.dir.remove(e.file) : removeBehind(e.file);
    if (e.fd !== undefined) fs.closeSync(e.fd);
  }

  function find(ino: number): [Tier, Entry] | undefined {
    const r = ram.entries.get(ino);
    if (r) return [ram, r];
    const d = disk.entries.get(ino);
    return d ? [disk, d] : undefined;
  }

  /** RAM copies on their way to the disk tier (each holds its memfd and two fds more meanwhile). */
  let demoting = 0;

  function evict(tier: Tier, e: Entry): void {
    if (tier === ram && demote(e)) return;
    drop(tier, e);
  }

  function drop(tier: Tier, e: Entry): void {
    if (e.ahead) evictedUnread += e.size;
    release(tier, e);
    o.onEvict(e.ino, e.version, tier.name);
  }

  /**
   * Move a RAM copy to the disk tier if it has room: the entry is the disk tier's at once (served from
   * its memfd meanwhile), its file made, written and written out on worker threads (a create on the event loop cost
   * a reader past the RAM tier a third of its CPU) and put in place if the entry is still there.
   */
  function demote(e: Entry): boolean {
    if (demoting >= DEMOTING_MAX || e.fd === undefined || e.size > disk.limit || !makeRoom(disk, e.size)) return false;
    let src: number;
    const { file, part } = copyFile(e.ino, e.version);
    try {
      // Its own fds: a release of the entry meanwhile closes the memfd, whose number could then name another file.
      src = dupFd(e.fd);
    } catch {
      return false;
    }
    ram.entries.delete(e.ino);
    ram.used -= e.size;
    unfresh(ram, e);
    arrive(disk, e);
    disk.used += e.size;
    demoting++;
    const landed = (ok: boolean, dst?: number) => {
      demoting--;
      fs.closeSync(src);
      if (dst !== undefined) fs.closeSync(dst);
      const here = disk.entries.get(e.ino) === e;
      if (ok && here) {
        try {
          o.dir.rename(part, file);
          e.file = file;
          fs.closeSync(e.fd!);
          delete e.fd;
          o.onDemote?.(e.ino, false);
          return;
        } catch {
          // Evicted below, as when its bytes could not be written.
        }
      }
      if (dst !== undefined) removeBehind(part);
      if (here) {
        drop(disk, e);
        o.onDemote?.(e.ino, true);
      }
    };
    o.dir.openFileAsync(part, O_RDWR | O_CREAT | O_EXCL, 0o600).then(
      (dst) =>
        filePool()
          .copy(src, dst, e.size)
          // Written out before it is served from disk: the disk may refuse what its page cache took.
          .then((rc) => (rc === 0 && e.size > 0 ? writeOut(dst, 0, e.size, false) : rc))
          .then((rc) => landed(rc === 0, dst), () => landed(false, dst)),
      () => landed(false),
    );
    return true;
  }

  /** Whether one more copy of size bytes fits once every committed copy is evicted; if so, evict as few as that takes, fresh ones last. */
  function makeRoom(tier: Tier, size: number): boolean {
    if (tier.pending + size > tier.limit || tier.pendingFiles + 1 > tier.maxFiles) return false;
    age(tier);
    const fits = () => tier.used + size <= tier.limit && tier.entries.size + tier.pendingFiles + 1 <= tier.maxFiles;
    for (const e of tier.entries.values()) {
      if (fits()) return true;
      if (!tier.fresh.has(e.ino)) evict(tier, e);
    }
    for (const e of tier.fresh.values()) {
      if (fits()) break;
      evict(tier, e);
    }
    return true;
  }

  /** Copies fetched ahead take at most half a tier: the rest keeps copies in use. */
  const aheadLimit = (t: Tier) => Math.floor(t.limit / 2);

  function tierFor(size: number): Tier | undefined {
    if (size <= o.ramMaxFileBytes && size <= ram.limit) return ram;
    if (size <= disk.limit) return disk;
    return undefined;
  }

  return {
    open(ino, version, use = true) {
      const f = find(ino);
      if (!f || f[1].version !== version) return undefined;
      const e = f[1];
      // A RAM copy's reader gets a fd of its own, which outlives an eviction; the seals keep any write off the copy.
      const c: Opened = { fd: e.file ? o.dir.openFile(e.file, O_RDONLY) : dupFd(e.fd!) };
      return use && used(...f) ? { ...c, ahead: true } : c;
    },
    use(ino, version) {
      const f = find(ino);
      return !!f && f[1].version === version && used(...f);
    },
    has(ino, version) {
      return find(ino)?.[1].version === version;
    },
    versionOf(ino) {
      return find(ino)?.[1].version;
    },
    fits(size) {
      return tierFor(size) !== undefined;
    },
    begin(ino, version, size, ahead = false) {
      const tier = tierFor(size);
      if (!tier) throw new FsError(E.EFBIG, `a copy of ${size} bytes fits no cache tier`);
      age(tier);
      if (ahead && tier.ahead + size > aheadLimit(tier)) return undefined;
      if (!makeRoom(tier, size)) return undefined;
      const names = tier === disk ? copyFile(ino, version) : undefined;
      const file = names?.file;
      const tmp = names?.part;
      let fd = -1;
      if (!tmp) {
        fd = createMemfd();
        // No memfd to be had (out of file descriptors or memory): no room, like a full tier.
        if (fd < 0) return undefined;
      }
      const reserve = (sign: 1 | -1) => {
        tier.used += sign * size;
        tier.pending += sign * size;
        tier.pendingFiles += sign;
        // Counted as fresh from the start: the budget for copies fetched ahead holds those on their way too.
        if (ahead) tier.ahead += sign * size;
      };
      reserve(1);
      let settled = false;
      /** Writes on the file threads not yet done: the fd is closed only after the last (its number could name another file by then). */
      let writing = 0;
      let closeAfterWrites = false;
      let furthest = 0;
      let dropped = 0;
      const dropBehind = (end: number) => {
        furthest = Math.max(furthest, end);
        for (; furthest - dropped >= DROP_BEHIND + DROP_STEP; dropped += DROP_STEP) writeOutPart(dropped, DROP_STEP, true);
      };
      /** Through a descriptor of its own: the copy's may be closed (committed, aborted) before it is done. */
      const writeOutPart = (at: number, length: number, drop: boolean) => {
        const own = dupFd(fd);
        void writeOut(own, at, length, drop)
          .then((rc) => {
            if (rc < 0) spoiled();
          })
          .finally(() => fs.closeSync(own));
      };
      /** Part of it could not be written to disk (EIO, ENOSPC): once its pages go, it would read what the disk has, so it is never served. */
      let committed: Entry | undefined;
      const spoiled = () => {
        if (!settled) abort();
        else if (committed && tier.entries.get(ino) === committed) drop(tier, committed);
      };
      const discard = () => {
        // A disk copy aborted before its file was made: the open's settling discards it.
        if (fd < 0) return;
        fs.closeSync(fd);
        if (tmp) removeBehind(tmp);
      };
      const abort = () => {
        if (settled) return;
        settled = true;
        reserve(-1);
        if (writing) closeAfterWrites = true;
        else discard();
        wakeSettled();
      };
      /** n bytes at at may be taken into the copy. */
      const admit = (at: number, n: number) => {
        if (at + n > size) throw new FsError(E.EIO, `copy of inode ${ino} longer than its ${size} bytes`);
        if (settled) throw new FsError(E.EIO, `copy of inode ${ino} is settled`);
      };
      const ready = tmp
        ? o.dir.openFileAsync(tmp, O_RDWR | O_CREAT | O_EXCL, 0o600).then(
            (opened) => {
              fd = opened;
              if (settled && !writing) discard();
              if (settled) throw new FsError(E.EIO, `copy of inode ${ino} was given up while its file was made`);
            },
            (e: unknown) => {
              abort();
              throw e;
            },
          )
        : Promise.resolve();
      ready.catch(() => {});
      const pending: PendingCopy = {
        ready,
        write(data, at) {
          admit(at, byteLength(data));
          if (!tmp) return writePiecesSync(fd, data, at);
          writing++;
          return ready
            .then(() => writePieces(fd, data, at))
            .then(() => dropBehind(at + byteLength(data)))
            .finally(() => {
              if (--writing === 0 && closeAfterWrites) discard();
            });
        },
        get fd() {
          if (fd < 0) throw new FsError(E.EIO, `copy of inode ${ino} has no file yet`);
          return fd;
        },
        landed(at, n) {
          admit(at, n);
          if (tmp) dropBehind(at + n);
        },
        commit() {
          if (settled) return;
          if (fd < 0) {
            abort();
            throw new FsError(E.EIO, `the copy of inode ${ino} was committed before its file was made`);
          }
          // Unsealed, the copy could be written through a reader's fd (the kernel refuses a seal only while the memfd is mapped writable: never here).
          if (!tmp && !sealMemfd(fd)) {
            abort();
            throw new FsError(E.EIO, `the RAM copy of inode ${ino} could not be sealed`);
          }
          settled = true;
          tier.pending -= size;
          tier.pendingFiles--;
          const old = find(ino);
          if (old) release(old[0], old[1]);
          // Its reservation becomes its place among the fresh (arrive counts it again).
          if (ahead) tier.ahead -= size;
          const e: Entry = { ino, version, size, ahead, arrived: 0 };
          committed = e;
          if (tmp && file) {
            // The rest is checked written too (and a big copy's rest dropped): the kernel's own
            // write-back would fail unseen, and the copy then read back what the disk has.
            if (size > dropped) writeOutPart(dropped, size - dropped, dropped > 0);
            fs.closeSync(fd);
            // No fsync: the tier is emptied at every start, so a copy cut short by a crash is never served.
            o.dir.rename(tmp, file);
            e.file = file;
          } else e.fd = fd;
          arrive(tier, e);
          wakeSettled();
        },
        abort,
      };
      return pending;
    },
    settled() {
      if (ram.pendingFiles + disk.pendingFiles === 0) return Promise.resolve();
      return new Promise<void>((res) => settleWaiters.push(res));
    },
    usage() {
      return [ram, disk].map((t) => ({ tier: t.name, bytes: t.used, files: t.entries.size, limit: t.limit }));
    },
    ahead() {
      age(ram);
      age(disk);
      return { bytes: ram.ahead + disk.ahead, limit: aheadLimit(tierFor(1) ?? ram), evictedUnread };
    },
    dropAll() {
      for (const t of [ram, disk]) for (const e of [...t.entries.values()]) drop(t, e);
    },
    close() {
      for (const t of [ram, disk]) for (const e of [...t.entries.values()]) release(t, e, true);
    },
  };
}
