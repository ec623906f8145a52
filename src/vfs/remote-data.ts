import * as fs from "node:fs";
import type { Holders, MetadataStore, NodeInfo } from "../meta/store.ts";
import type { PeerPool } from "../peer/peer-client.ts";
import { readCopy, type CopyCache, type CopyData } from "../cache/copy-cache.ts";
import { fromConnectError } from "../peer/errors.ts";
import { FsError, E, toErrno } from "../util/errno.ts";
import { S_IFMT, S_IFREG } from "./attr.ts";
import type { Logger } from "../util/log.ts";
import type { LocalDir } from "../local/local-dir.ts";
import { keep, type KeptFile } from "./local-files.ts";

const { O_RDWR, O_CREAT, O_EXCL } = fs.constants;

/**
 * No holder could give the version asked for whole, but some answered: they no longer hold it, or
 * hold more or fewer bytes than its record says (a write in progress there). A newer version, or the
 * writer's close, will do.
 */
export class ChangingCopy extends FsError {
  constructor(message: string) {
    super(E.EIO, message);
  }
}

/**
 * Writing an arriving copy to this node's own disk failed (ENOSPC, EIO of the disk): no other holder
 * would do better, and the caller gets that errno, not the EIO of an unreachable holder.
 */
class LocalWriteError extends FsError {}

/** Marks a file still being fetched into a root path (never published, never served). */
export const PARTIAL_MARK = ".mcfs-part-";

/** Remote files from this size on are read in ranges while their copy arrives. */
const RANGED_MIN = 64 << 20;
/** Companions of a small file fetched in one call: files up to this size, this many, this many bytes. */
const BATCH_FILE_MAX = 256 << 10;
const BATCH_FILES = 512;
const UNWANTED_MAX = 1_000_000;
const BATCH_BYTES = 16 << 20;
/** Bytes received but not yet written to a copy on disk. */
const WRITE_BEHIND = 16 << 20;
/** Largest file whose published bytes are copied aside when this node starts writing it in place. */
const PRESERVE_MAX = 16 << 20;
/** How far ahead of an arriving copy a read waits for it instead of asking the holder. */
const FOLLOW_WINDOW = 32 << 20;

/** Bytes held by other nodes, fetched from a live holder of the current version. */
export interface RemoteData {
  /**
   * Open ino at version for reading: a fd on a copy cached on disk, or a reader in JS (a copy in
   * RAM; or ranges of a big file, or one no cache tier takes, read from a holder on demand while a
   * copy arrives). holders: if just read.
   */
  open(ino: number, version: number, path: string, size: number, holders?: Holders, siblings?: Siblings): Promise<{ fd: number } | { ranges: RangeReader }>;
  /**
   * Fetch the bytes of ino at version to path in this node's root (this node is about to write them),
   * with the file's owner and mode.
   */
  fetchTo(ino: number, version: number, path: string, size: number, owner: KeptFile, holders?: Holders): Promise<void>;
  /**
   * Keep the bytes of ino at version, read from fd (this node's root file, about to be written in
   * place), as a cached copy: other nodes reading that version get it until the writer's close
   * publishes the next. Kept only if intact() still holds once copied; small files only.
   */
  preserve(ino: number, version: number, fd: number, size: number, intact: () => boolean): Promise<void>;
}

/** Another file of the same directory (fetched along with a small file when it is small too). */
export interface Sibling {
  ino: number;
  path: string;
}

/** The other files of a file's directory, for fetching small ones along with it. */
export interface Siblings {
  dir: number;
  list(): Promise<Iterable<Sibling>>;
}

interface Source {
  node: string;
  address: string;
}

interface Wanted {
  ino: number;
  version: number;
  path: string;
  size: number;
}

export interface RangeReader {
  /** Up to size bytes at offset (fewer only at the end of the file). */
  read(offset: number, size: number): Promise<Uint8Array>;
  close(): void;
}

/** A copy being fetched: where its bytes go, how many arrived so far, and readers waiting for more. */
interface Arriving {
  sink: { write(data: Uint8Array, at: number): void | Promise<void>; read(into: Uint8Array, at: number): number };
  got: number;
  waiters: (() => void)[];
}

export interface RemoteDataOptions {
  /** This node's root path: where fetchTo puts what this node is about to write. */
  root: LocalDir;
  store: MetadataStore;
  pool: PeerPool;
  cache: CopyCache;
  nodeId: string;
  /** This run of the node: its cached copies are listed under it. */
  startedAt: number;
  log: Logger;
  /** For metrics: an open found its copy cached (hit) or had to fetch it; bytes received from peers. */
  observe?: { cache(hit: boolean): void; received(bytes: number): void };
}

export function createRemoteData(o: RemoteDataOptions): RemoteData {
  const inflight = new Map<string, Promise<void>>();
  const arriving = new Map<string, Arriving>();
  /** Companions being fetched, by "ino.version" (settle whether or not they arrived), and their inodes. */
  const prefetching = new Map<string, Promise<void>>();
  const fetchingIno = new Set<number>();
  /** Siblings found not worth fetching along (by inode, or "holder/inode"), so misses do not ask again. */
  const unwanted = new Set<number | string>();
  /** Companions fetched and not opened yet: read-ahead stops when they fill half the RAM tier. */
  const unopened = new Map<number, number>();
  let unopenedBytes = 0;
  /** Read-ahead chains running, by holder and directory. */
  const readingAhead = new Set<string>();
  let tmpSeq = 0;

  /** The cluster's nodes, asked of the store at most once a second. */
  let known: { at: number; nodes: Promise<Map<string, NodeInfo & { alive: boolean }>> } | undefined;
  function nodes() {
    if (!known || Date.now() - known.at > 1000) known = { at: Date.now(), nodes: o.store.nodes() };
    return known.nodes;
  }

  /** Whether node holds ino at version, in its root path or (in its current run) its cache. */
  function holds(h: Holders, node: string, version: number, all: Map<string, NodeInfo>): boolean {
    const c = h.cached.get(node);
    return h.data.get(node) === version || (c?.version === version && all.get(node)?.startedAt === c.startedAt);
  }

  /**
   * The nodes that hold ino at version: live ones first, in random order (readers of one file spread
   * over its copies), then root-path holders that stopped beating (they may still answer).
   */
  async function sources(ino: number, version: number, given?: Holders): Promise<Source[]> {
    const [h, all] = await Promise.all([given ?? o.store.holders(ino), nodes()]);
    const live: Source[] = [];
    const quiet: Source[] = [];
    for (const node of new Set([...h.data.keys(), ...h.cached.keys()])) {
      const n = all.get(node);
      if (node === o.nodeId || !n || !holds(h, node, version, all)) continue;
      if (n.alive) live.push({ node, address: n.address });
      else if (h.data.get(node) === version) quiet.push({ node, address: n.address });
    }
    for (let i = live.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [live[i], live[j]] = [live[j]!, live[i]!];
    }
    return [...live, ...quiet];
  }

  /**
   * Other small files of the directory that node holds and this node has no copy of: fetched with
   * the file asked for (workflow tasks read many small files of one directory).
   */
  async function companions(node: string, siblings: Iterable<Sibling>): Promise<Wanted[]> {
    const cand: Sibling[] = [];
    for (const s of siblings) {
      if (o.cache.versionOf(s.ino) === undefined && !fetchingIno.has(s.ino) && !unwanted.has(s.ino) && !unwanted.has(`${node}/${s.ino}`)) cand.push(s);
      if (cand.length === BATCH_FILES) break;
    }
    if (!cand.length) return [];
    // Records only: whether node holds each is its to say (it answers ESTALE for those it does not).
    const recs = await o.store.getMany(cand.map((c) => c.ino));
    if (unwanted.size > UNWANTED_MAX) unwanted.clear();
    const out: Wanted[] = [];
    let bytes = 0;
    for (const [i, c] of cand.entries()) {
      const r = recs[i];
      // Not looked at again: what is not a small file.
      if (!r || (r.mode & S_IFMT) !== S_IFREG || r.size > BATCH_FILE_MAX) unwanted.add(c.ino);
      else if ((bytes += r.size) <= BATCH_BYTES) out.push({ ino: c.ino, version: r.version, path: c.path, size: r.size });
    }
    return out;
  }

  /**
   * One call for first and its companions: resolves once first has arrived whole; the companions go
   * on arriving into the cache behind it (an open of one of them waits for it).
   */
  function fetchBatch(src: Source, first: { wanted: Wanted; progress: Arriving } | undefined, extra: Wanted[]): { first: Promise<void>; all: Promise<void> } {
    const address = src.address;
    interface Item extends Wanted {
      got: number;
      /** Writes to disk still running: the file is finished after them. */
      writes: Promise<void>[];
      write(d: Uint8Array, at: number): void | Promise<void>;
      finish(err?: Error): void;
    }
    let firstDone: (err?: Error) => void = () => {};
    const firstArrived = first ? new Promise<void>((res, rej) => (firstDone = (err) => (err ? rej(err) : res()))) : Promise.resolve();
    const items: Item[] = [];
    if (first) {
      first.progress.got = 0;
      items.push({ ...first.wanted, got: 0, writes: [], write: inOrder(first.progress), finish: firstDone });
    }
    for (const w of extra) {
      const key = `${w.ino}.${w.version}`;
      const pending = o.cache.begin(w.ino, w.version, w.size);
      let settle!: () => void;
      fetchingIno.add(w.ino);
      prefetching.set(key, new Promise<void>((res) => (settle = res)));
      items.push({
        ...w,
        got: 0,
        writes: [],
        write: (d, at) => pending.write(d, at),
        finish(err) {
          if (err) pending.abort();
          else {
            pending.commit();
            list(w.ino, w.version);
            unopened.set(w.ino, w.size);
            unopenedBytes += w.size;
          }
          prefetching.delete(key);
          fetchingIno.delete(w.ino);
          settle();
        },
      });
    }
    const done = new Set<number>();
    const end = (i: number, err?: Error) => {
      if (done.has(i)) return;
      done.add(i);
      const it = items[i]!;
      Promise.all(it.writes).then(
        () => it.finish(err),
        (e: unknown) => it.finish(err ?? (e as Error)),
      );
    };
    const all = (async () => {
      try {
        for await (const msg of o.pool.get(address).readFiles({ files: items.map((w) => ({ path: w.path, ino: BigInt(w.ino), version: BigInt(w.version) })) })) {
          for (const ch of msg.pieces) {
            const it = items[ch.index];
            if (!it || done.has(ch.index)) throw new FsError(E.EIO, `holder ${address} sent a piece of file ${ch.index} out of turn`);
            if (ch.errno) {
              // Not held there (another node's, or this node's own): not asked of it again.
              if (ch.errno === E.ESTALE && (ch.index > 0 || !first)) unwanted.add(`${src.node}/${it.ino}`);
              end(ch.index, new FsError(ch.errno, `holder ${address} could not send ${it.path}`));
              continue;
            }
            if (Number(ch.offset) !== it.got || it.got + ch.data.length > it.size) throw new FsError(E.EIO, `holder ${address} sent bytes of ${it.path} out of order`);
            const w = it.write(ch.data, it.got);
            if (w) it.writes.push(w);
            o.observe?.received(ch.data.length);
            it.got += ch.data.length;
            if (ch.last) end(ch.index, it.got === it.size ? undefined : new FsError(E.EIO, `holder ${address} has ${it.got} of ${it.size} bytes of ${it.path}`));
          }
        }
      } catch (e) {
        const err = fromConnectError(e);
        for (const i of items.keys()) end(i, err);
      }
      for (const i of items.keys()) end(i, new FsError(E.EIO, `holder ${address} did not send ${items[i]!.path}`));
    })();
    return { first: firstArrived, all };
  }

  /**
   * Keep a directory's small files coming while they are being read: after a full batch, the next
   * one, until the copies fetched and not yet opened fill half the RAM tier.
   */
  function readAhead(src: Source, siblings: Siblings): void {
    const key = `${src.node}/${siblings.dir}`;
    // Copies evicted before anyone opened them no longer count.
    for (const [ino, size] of unopened) {
      if (o.cache.versionOf(ino) !== undefined) continue;
      unopened.delete(ino);
      unopenedBytes -= size;
    }
    const room = (o.cache.usage().find((t) => t.tier === "ram")?.limit ?? 0) / 2;
    if (readingAhead.has(key) || unopenedBytes >= room) return;
    readingAhead.add(key);
    void (async () => {
      let full = false;
      try {
        const extra = await companions(src.node, await siblings.list());
        full = extra.length === BATCH_FILES;
        if (extra.length) await fetchBatch(src, undefined, extra).all;
      } catch (e) {
        o.log.debug({ dir: siblings.dir, err: (e as Error).message }, "read-ahead stopped");
        full = false;
      } finally {
        readingAhead.delete(key);
      }
      if (full) readAhead(src, siblings);
    })();
  }

  /**
   * Writes into an arriving copy, one after another: readers following the copy trust progress.got
   * to cover only bytes written. onWritten hears each write land. Each call's promise settles with it.
   */
  function inOrder(progress: Arriving, onWritten?: (bytes: number) => void): (d: Uint8Array, at: number) => Promise<void> {
    let chain: Promise<void> = Promise.resolve();
    return (d, at) =>
      (chain = chain.then(async () => {
        try {
          await progress.sink.write(d, at);
        } catch (e) {
          throw new LocalWriteError(toErrno(e), `writing the arriving copy: ${(e as Error).message}`);
        }
        onWritten?.(d.length);
        progress.got = at + d.length;
        for (const w of progress.waiters.splice(0)) w();
      }));
  }

  /** Stream the file from one holder into fd; the byte count must match the record's size. */
  async function fetchFrom(address: string, ino: number, version: number, path: string, size: number, progress: Arriving): Promise<void> {
    let got = 0;
    progress.got = 0;
    // Disk writes run behind the stream, off the event loop: receiving and writing overlap.
    let behind = 0;
    const write = inOrder(progress, (n) => (behind -= n));
    let written: Promise<void> = Promise.resolve();
    try {
      for await (const ch of o.pool.get(address).readFile({ path, offset: 0n, length: 0n, ino: BigInt(ino), version: BigInt(version) })) {
        if (Number(ch.offset) !== got) throw new FsError(E.EIO, `holder ${address} sent bytes out of order`);
        if (got + ch.data.length > size) throw new ChangingCopy(`holder ${address} has more than the ${size} bytes of ${path}`);
        const at = got, data = ch.data;
        got += data.length;
        behind += data.length;
        o.observe?.received(data.length);
        written = write(data, at);
        // Bounded: past this the stream waits (and HTTP/2 flow control holds the sender).
        if (behind > WRITE_BEHIND) await written;
      }
      await written;
    } catch (e) {
      await written.catch(() => {});
      throw fromConnectError(e);
    }
    // A short copy is never served: a holder that lost bytes is as good as down.
    if (got !== size) throw new ChangingCopy(`holder ${address} has ${got} of ${size} bytes of ${path}`);
  }

  async function fetchAny(ino: number, version: number, path: string, size: number, progress: Arriving, given?: Holders): Promise<void> {
    const errors: string[] = [];
    let changing = false;
    for (const fresh of given ? [false, true] : [true]) {
      if (fresh) known = undefined;
      for (const { address } of await sources(ino, version, fresh ? undefined : given)) {
        try {
          const t0 = performance.now();
          await fetchFrom(address, ino, version, path, size, progress);
          if (size >= RANGED_MIN) {
            const seconds = (performance.now() - t0) / 1000;
            o.log.info({ path, ino, holder: address, mib: Math.round(size / 2 ** 20), seconds: +seconds.toFixed(2), mbPerSecond: Math.round(size / 1e6 / seconds) }, "copied a big file from its holder");
          }
          return;
        } catch (e) {
          if (e instanceof LocalWriteError) throw e;
          errors.push(`${address}: ${(e as Error).message}`);
          changing ||= e instanceof ChangingCopy || (e instanceof FsError && e.errno === E.ESTALE);
          o.log.warn({ path, ino, holder: address, err: (e as Error).message }, "holder failed, trying the next one");
        }
      }
    }
    const msg = `no reachable node holds ${path} at version ${version}${errors.length ? ` (${errors.join("; ")})` : ""}`;
    throw changing ? new ChangingCopy(msg) : new FsError(E.EIO, msg);
  }

  /** Copies to list as this node's, written together (a batch of small files lists in one call). */
  let toList: { ino: number; version: number }[] = [];
  function list(ino: number, version: number): void {
    if (toList.push({ ino, version }) > 1) return;
    queueMicrotask(() => {
      const copies = toList;
      toList = [];
      o.store.addCachedCopies(o.nodeId, o.startedAt, copies).catch((e: unknown) => o.log.warn({ copies: copies.length, err: (e as Error).message }, "could not list cached copies"));
    });
  }

  function once(key: string, fn: () => Promise<void>): Promise<void> {
    let p = inflight.get(key);
    if (!p) {
      p = fn().finally(() => inflight.delete(key));
      inflight.set(key, p);
    }
    return p;
  }

  /** Bring ino at version into the cache and list this node as holding it. */
  async function cache(ino: number, version: number, path: string, size: number, given?: Holders, siblings?: Siblings): Promise<void> {
    const key = `${ino}.${version}`;
    // Being fetched with another file: wait for that (it settles either way), then fetch it alone if it failed.
    await prefetching.get(key);
    if (o.cache.has(ino, version)) return;
    return once(key, async () => {
      const pending = o.cache.begin(ino, version, size);
      const progress: Arriving = { sink: pending, got: 0, waiters: [] };
      arriving.set(key, progress);
      try {
        let fetched = false;
        if (siblings && size <= BATCH_FILE_MAX) {
          const src = (await sources(ino, version, given))[0];
          const extra = src ? await companions(src.node, await siblings.list()) : [];
          if (src && extra.length) {
            try {
              const batch = fetchBatch(src, { wanted: { ino, version, path, size }, progress }, extra);
              await batch.first;
              fetched = true;
              if (extra.length === BATCH_FILES) void batch.all.then(() => readAhead(src, siblings));
            } catch (e) {
              o.log.warn({ path, ino, holder: src.address, err: (e as Error).message }, "batched fetch failed, fetching the file alone");
            }
          }
        }
        if (!fetched) await fetchAny(ino, version, path, size, progress, given);
        pending.commit();
      } catch (e) {
        pending.abort();
        throw e;
      } finally {
        arriving.delete(key);
        for (const w of progress.waiters.splice(0)) w();
      }
      list(ino, version);
    });
  }

  function rangeReader(ino: number, version: number, path: string, size: number, order: string[]): RangeReader {
    const key = `${ino}.${version}`;
    let copy: CopyData | undefined;
    let at = 0;
    const reader: RangeReader = {
      async read(offset, want) {
        const end = Math.min(size, offset + want);
        const out = new Uint8Array(Math.max(0, end - offset));
        // From the copy when it holds these bytes already (whole, or arrived so far).
        copy ??= o.cache.open(ino, version);
        if (copy) {
          readCopy(copy, out, offset);
          return out;
        }
        const part = arriving.get(key);
        if (part && part.got >= end) {
          part.sink.read(out, offset);
          return out;
        }
        // Just ahead of the copy (a sequential reader): wait for it rather than fetch the bytes twice.
        if (part && end <= part.got + FOLLOW_WINDOW) {
          await new Promise<void>((res) => part.waiters.push(res));
          return reader.read(offset, want);
        }
        let got = 0;
        while (offset + got < end) {
          let data: Uint8Array;
          // Reads run concurrently (kernel readahead): only the first to see a holder fail moves on.
          const tried = at;
          const holder = order[tried];
          if (holder === undefined) throw new FsError(E.EIO, `reading ${path}: no holder left`);
          try {
            data = (await o.pool.get(holder).read({ path, offset: BigInt(offset + got), length: BigInt(end - offset - got), ino: BigInt(ino), version: BigInt(version) })).data;
          } catch (e) {
            // This holder failed: the next one, if any; never a short read.
            o.log.warn({ path, ino, holder, err: fromConnectError(e).message }, "holder failed during a ranged read");
            if (at === tried) at++;
            if (at >= order.length) throw new FsError(E.EIO, `reading ${path}: ${fromConnectError(e).message}`);
            continue;
          }
          if (data.length === 0) throw new FsError(E.EIO, `holder of ${path} has fewer bytes than its record`);
          o.observe?.received(data.length);
          out.set(data, got);
          got += data.length;
        }
        return out;
      },
      close() {
        if (copy && "fd" in copy) fs.closeSync(copy.fd);
        copy = undefined;
      },
    };
    return reader;
  }

  /** A copy in RAM, read in JS. */
  function bytesReader(bytes: Uint8Array): RangeReader {
    return {
      read: async (offset, want) => bytes.slice(offset, offset + want),
      close() {},
    };
  }

  function opened(c: CopyData | undefined): { fd: number } | { ranges: RangeReader } | undefined {
    return c && ("fd" in c ? c : { ranges: bytesReader(c.bytes) });
  }

  return {
    async open(ino, version, path, size, given, siblings) {
      o.observe?.cache(o.cache.has(ino, version));
      const was = unopened.get(ino);
      if (was !== undefined) {
        unopened.delete(ino);
        unopenedBytes -= was;
      }
      const fits = o.cache.fits(size);
      if (fits && size < RANGED_MIN) {
        await cache(ino, version, path, size, given, siblings);
        // undefined: evicted at once by other copies arriving (a tier far smaller than the files read).
        const c = opened(o.cache.open(ino, version));
        if (c) return c;
      } else {
        const c = opened(o.cache.open(ino, version));
        if (c) return c;
        if (fits) void cache(ino, version, path, size, given).catch((e: unknown) => o.log.warn({ path, ino, err: (e as Error).message }, "background copy failed"));
      }
      const order = (await sources(ino, version, given)).map((s) => s.address);
      if (!order.length) throw new FsError(E.EIO, `no live node holds ${path} at version ${version}`);
      return { ranges: rangeReader(ino, version, path, size, order) };
    },
    async preserve(ino, version, fd, size, intact) {
      if (size > PRESERVE_MAX || !o.cache.fits(size) || o.cache.has(ino, version)) return;
      const pending = o.cache.begin(ino, version, size);
      try {
        const buf = Buffer.allocUnsafe(Math.min(size, 1 << 20));
        for (let at = 0; at < size; ) {
          const n = await new Promise<number>((res, rej) => fs.read(fd, buf, 0, Math.min(buf.length, size - at), at, (e, got) => (e ? rej(e) : res(got))));
          if (n === 0) throw new FsError(E.EIO, `holds ${at} of its ${size} bytes`);
          await pending.write(buf.subarray(0, n), at);
          at += n;
        }
        if (!intact()) throw new FsError(E.ESTALE, "written while it was copied");
        pending.commit();
      } catch (e) {
        pending.abort();
        o.log.warn({ ino, version, err: (e as Error).message }, "could not keep the published bytes of a file about to be written; other nodes' reads of them wait for its close");
      }
    },
    fetchTo(ino, version, path, size, owner, given) {
      return once(`root:${path}`, async () => {
        const tmp = `${path}${PARTIAL_MARK}${process.pid}-${++tmpSeq}`;
        const fd = o.root.openFile(tmp, O_RDWR | O_CREAT | O_EXCL, 0o600);
        try {
          const src = o.cache.open(ino, version);
          if (src !== undefined) {
            try {
              const buf = Buffer.allocUnsafe(1 << 20);
              for (let off = 0, n; (n = readCopy(src, buf, off)) > 0; off += n) fs.writeSync(fd, buf, 0, n, off);
            } finally {
              if ("fd" in src) fs.closeSync(src.fd);
            }
          } else {
            const sink = { write: (d: Uint8Array, at: number) => void fs.writeSync(fd, d, 0, d.length, at), read: (into: Uint8Array, at: number) => fs.readSync(fd, into, 0, into.length, at) };
            await fetchAny(ino, version, path, size, { sink, got: 0, waiters: [] }, given);
          }
          keep(o.root, fd, owner);
          fs.closeSync(fd);
          o.root.rename(tmp, path);
        } catch (e) {
          try {
            fs.closeSync(fd);
          } catch {
            // already closed
          }
          o.root.remove(tmp);
          throw e;
        }
      });
    },
  };
}
