import type { CopyCache } from "../../cache/copy-cache.ts";
import type { MetadataStore } from "../../meta/store.ts";
import type { PeerReads } from "../../peer/peer-reads.ts";
import { E, FsError } from "../../util/errno.ts";
import type { Logger } from "../../util/log.ts";
import { isReg } from "../attr.ts";
import { inOrder, type Arriving } from "./arriving.ts";
import type { Source } from "./sources.ts";

/** Companions of a small file fetched in one call: files up to this size, this many, this many bytes. */
export const BATCH_FILE_MAX = 256 << 10;
export const BATCH_FILES = 512;
const BATCH_BYTES = 16 << 20;
const UNWANTED_MAX = 1_000_000;

/** A file's bytes at a version, to be fetched. */
export interface Wanted {
  ino: number;
  version: number;
  path: string;
  size: number;
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

/**
 * Small files fetched together: a file asked for and the other small files of its directory that
 * its holder has (workflow tasks read many small files of one directory), in one ReadFiles call, and
 * read-ahead of the next batch while they are being read.
 */
export interface Batches {
  /** A companion fetch of ino at version under way: settles when it has (arrived or not). */
  pending(ino: number, version: number): Promise<void> | undefined;
  /** Other small files of the directory that node holds and this node has no copy of. */
  companions(node: string, siblings: Iterable<Sibling>): Promise<Wanted[]>;
  /**
   * One call for first and its companions: resolves once first has arrived whole; the companions go
   * on arriving into the cache behind it (an open of one of them waits for it).
   */
  fetch(src: Source, first: { wanted: Wanted; progress: Arriving } | undefined, extra: Wanted[]): { first: Promise<void>; all: Promise<void> };
  /**
   * Keep a directory's small files coming while they are being read: after a full batch, the next
   * one, until the copies fetched and not yet opened fill half the RAM tier.
   */
  readAhead(src: Source, siblings: Siblings): void;
  /** ino was opened: its fetched copy is no longer counted as unused. */
  opened(ino: number): void;
}

export interface BatchesOptions {
  peers: PeerReads;
  store: MetadataStore;
  cache: CopyCache;
  log: Logger;
  /** A companion arrived whole into the cache: list it as this node's copy. */
  list(ino: number, version: number): void;
  received?: (bytes: number) => void;
  /** Fetched along and evicted before anyone opened it: bytes moved for nothing. */
  unused?: (bytes: number) => void;
}

export function createBatches(o: BatchesOptions): Batches {
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
      if (!r || !isReg(r.mode) || r.size > BATCH_FILE_MAX) unwanted.add(c.ino);
      else if ((bytes += r.size) <= BATCH_BYTES) out.push({ ino: c.ino, version: r.version, path: c.path, size: r.size });
    }
    return out;
  }

  function fetch(src: Source, first: { wanted: Wanted; progress: Arriving } | undefined, extra: Wanted[]): { first: Promise<void>; all: Promise<void> } {
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
            o.list(w.ino, w.version);
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
        for await (const ch of o.peers.files(address, items)) {
          const it = items[ch.index];
          if (!it || done.has(ch.index)) throw new FsError(E.EIO, `holder ${address} sent a piece of file ${ch.index} out of turn`);
          if (ch.errno) {
            // Not held there (another node's, or this node's own): not asked of it again.
            if (ch.errno === E.ESTALE && (ch.index > 0 || !first)) unwanted.add(`${src.node}/${it.ino}`);
            end(ch.index, new FsError(ch.errno, `holder ${address} could not send ${it.path}`));
            continue;
          }
          if (ch.offset !== it.got || it.got + ch.data.length > it.size) throw new FsError(E.EIO, `holder ${address} sent bytes of ${it.path} out of order`);
          const w = it.write(ch.data, it.got);
          if (w) it.writes.push(w);
          o.received?.(ch.data.length);
          it.got += ch.data.length;
          if (ch.last) end(ch.index, it.got === it.size ? undefined : new FsError(E.EIO, `holder ${address} has ${it.got} of ${it.size} bytes of ${it.path}`));
        }
      } catch (e) {
        for (const i of items.keys()) end(i, e as Error);
      }
      for (const i of items.keys()) end(i, new FsError(E.EIO, `holder ${address} did not send ${items[i]!.path}`));
    })();
    return { first: firstArrived, all };
  }

  /** What fetched-along copies not yet opened may take: half the RAM tier (the rest is for copies in use). */
  const ramRoom = () => (o.cache.usage().find((t) => t.tier === "ram")?.limit ?? 0) / 2;

  /** Copies evicted before anyone opened them no longer count against read-ahead; they were fetched for nothing. */
  function sweep(): void {
    for (const [ino, size] of unopened) {
      if (o.cache.versionOf(ino) !== undefined) continue;
      unopened.delete(ino);
      unopenedBytes -= size;
      o.unused?.(size);
    }
  }

  function readAhead(src: Source, siblings: Siblings): void {
    const key = `${src.node}/${siblings.dir}`;
    sweep();
    if (readingAhead.has(key) || unopenedBytes >= ramRoom()) return;
    readingAhead.add(key);
    void (async () => {
      let full = false;
      try {
        const extra = await companions(src.node, await siblings.list());
        full = extra.length === BATCH_FILES;
        if (extra.length) await fetch(src, undefined, extra).all;
      } catch (e) {
        o.log.debug({ dir: siblings.dir, err: (e as Error).message }, "read-ahead stopped");
        full = false;
      } finally {
        readingAhead.delete(key);
      }
      if (full) readAhead(src, siblings);
    })();
  }

  return {
    pending: (ino, version) => prefetching.get(`${ino}.${version}`),
    companions,
    fetch,
    readAhead,
    opened(ino) {
      const was = unopened.get(ino);
      if (was === undefined) return;
      unopened.delete(ino);
      unopenedBytes -= was;
    },
  };
}
