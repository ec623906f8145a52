import * as fs from "node:fs";
import { E, FsError } from "../util/errno.ts";
import type { LocalDir } from "../local/local-dir.ts";

const { O_RDONLY, O_RDWR, O_CREAT, O_EXCL } = fs.constants;

/**
 * Copies of other nodes' files, in two tiers: small files in RAM (buffers: a file descriptor for each of
 * thousands of small copies would exhaust the fd limit), the rest on disk. One copy
 * per inode, named by its data version, so a copy is only ever served for the version it holds.
 * Least recently used copies are evicted to keep each tier within its size; copies on their way cannot
 * be, so a tier held by them refuses a new copy rather than overshoot.
 *
 * A copy fetched ahead (before anyone asked for it) is marked until its first open: such copies may
 * take half their tier, and those evicted unopened are counted, bytes moved for nothing.
 */
export interface CopyCache {
  /** The copy of ino at version: its bytes (RAM) or a new read-only fd (disk); marks it used. */
  open(ino: number, version: number): Opened | undefined;
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
  usage(): TierUsage[];
  ahead(): AheadUsage;
  /** Evict every copy (each unlisted through onEvict). */
  dropAll(): void;
  close(): void;
}

export type CopyData = { fd: number } | { bytes: Uint8Array };
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
  if ("fd" in c) return fs.readSync(c.fd, into, 0, into.length, at);
  const part = c.bytes.subarray(at, at + into.length);
  into.set(part);
  return part.length;
}

export interface PendingCopy {
  /** Into RAM at once; to disk on a worker thread (the promise). */
  write(data: Uint8Array, at: number): void | Promise<void>;
  /** Bytes already written (a reader following the copy as it arrives). */
  read(into: Uint8Array, at: number): number;
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
  diskBytes: number;
  /** A copy was evicted: it must no longer be listed as a holder. */
  onEvict(ino: number, version: number, tier: "ram" | "disk"): void;
}

interface Entry {
  ino: number;
  version: number;
  size: number;
  /** RAM: the bytes. */
  bytes?: Uint8Array;
  /** Disk: the file's name in the tier's directory. */
  file?: string;
  /** Fetched ahead and not opened yet. */
  ahead: boolean;
}

interface Tier {
  name: "ram" | "disk";
  limit: number;
  /** Committed copies by inode, least recently used first (Map order). */
  entries: Map<number, Entry>;
  /** Bytes of committed copies plus those being fetched. */
  used: number;
  /** Bytes of copies being fetched: they cannot be evicted. */
  pending: number;
  /** Bytes of copies fetched ahead and not opened (being fetched or committed). */
  ahead: number;
}

const COPY_NAME = /^\d+\.\d+(\.part-\d+)?$/;

export function createCopyCache(o: CopyCacheOptions): CopyCache {
  for (const f of o.dir.list("")) if (COPY_NAME.test(f.name)) o.dir.remove(`/${f.name}`);
  const ram: Tier = { name: "ram", limit: o.ramBytes, entries: new Map(), used: 0, pending: 0, ahead: 0 };
  const disk: Tier = { name: "disk", limit: o.diskBytes, entries: new Map(), used: 0, pending: 0, ahead: 0 };
  let seq = 0;
  let evictedUnread = 0;

  function release(tier: Tier, e: Entry): void {
    tier.entries.delete(e.ino);
    tier.used -= e.size;
    if (e.ahead) tier.ahead -= e.size;
    // Readers that opened the copy keep reading it (their fd, or the buffer they hold).
    if (e.file) o.dir.remove(e.file);
  }

  function find(ino: number): [Tier, Entry] | undefined {
    const r = ram.entries.get(ino);
    if (r) return [ram, r];
    const d = disk.entries.get(ino);
    return d ? [disk, d] : undefined;
  }

  function evict(tier: Tier, e: Entry): void {
    if (e.ahead) evictedUnread += e.size;
    release(tier, e);
    o.onEvict(e.ino, e.version, tier.name);
  }

  /** Whether size more bytes fit once every committed copy is evicted; if so, evict as few as that takes. */
  function makeRoom(tier: Tier, size: number): boolean {
    if (tier.pending + size > tier.limit) return false;
    for (const e of tier.entries.values()) {
      if (tier.used + size <= tier.limit) break;
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
    open(ino, version) {
      const f = find(ino);
      if (!f || f[1].version !== version) return undefined;
      const [tier, e] = f;
      tier.entries.delete(ino);
      tier.entries.set(ino, e);
      const c: Opened = e.bytes ? { bytes: e.bytes } : { fd: o.dir.openFile(e.file!, O_RDONLY) };
      if (!e.ahead) return c;
      e.ahead = false;
      tier.ahead -= e.size;
      return { ...c, ahead: true };
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
      if (ahead && tier.ahead + size > aheadLimit(tier)) return undefined;
      if (!makeRoom(tier, size)) return undefined;
      const reserve = (sign: 1 | -1) => {
        tier.used += sign * size;
        tier.pending += sign * size;
        if (ahead) tier.ahead += sign * size;
      };
      reserve(1);
      const file = tier === disk ? `/${ino}.${version}` : undefined;
      const tmp = file ? `${file}.part-${++seq}` : undefined;
      let fd = -1;
      let bytes: Uint8Array | undefined;
      try {
        if (tmp) fd = o.dir.openFile(tmp, O_RDWR | O_CREAT | O_EXCL, 0o600);
        else bytes = new Uint8Array(size);
      } catch (e) {
        reserve(-1);
        throw e;
      }
      let settled = false;
      return {
        write(data, at) {
          if (bytes) {
            if (at + data.length > size) throw new FsError(E.EIO, `copy of inode ${ino} longer than its ${size} bytes`);
            bytes.set(data, at);
            return;
          }
          return new Promise<void>((res, rej) => fs.write(fd, data, 0, data.length, at, (e) => (e ? rej(e) : res())));
        },
        read(into, at) {
          return bytes ? readCopy({ bytes }, into, at) : fs.readSync(fd, into, 0, into.length, at);
        },
        commit() {
          if (settled) return;
          settled = true;
          tier.pending -= size;
          const old = find(ino);
          if (old) release(old[0], old[1]);
          const e: Entry = { ino, version, size, ahead };
          if (tmp && file) {
            fs.closeSync(fd);
            // No fsync: the tier is emptied at every start, so a copy cut short by a crash is never served.
            o.dir.rename(tmp, file);
            e.file = file;
          } else e.bytes = bytes;
          tier.entries.set(ino, e);
        },
        abort() {
          if (settled) return;
          settled = true;
          reserve(-1);
          if (tmp) {
            fs.closeSync(fd);
            o.dir.remove(tmp);
          }
        },
      };
    },
    usage() {
      return [ram, disk].map((t) => ({ tier: t.name, bytes: t.used, files: t.entries.size, limit: t.limit }));
    },
    ahead() {
      return { bytes: ram.ahead + disk.ahead, limit: aheadLimit(tierFor(1) ?? ram), evictedUnread };
    },
    dropAll() {
      for (const t of [ram, disk]) for (const e of [...t.entries.values()]) evict(t, e);
    },
    close() {
      for (const t of [ram, disk]) for (const e of [...t.entries.values()]) release(t, e);
    },
  };
}
