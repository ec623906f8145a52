import { readWatching, type OpenWatches, type Watched } from "../open-watches.ts";
import type { CopyCache, PendingCopy } from "../../cache/copy-cache.ts";
import type { Holders, MetadataStore } from "../../meta/store.ts";
import type { PeerReads } from "../../peer/peer-reads.ts";
import { E, FsError } from "../../util/errno.ts";
import { byteLength, type Pieces } from "../../util/bytes.ts";
import type { Logger } from "../../util/log.ts";
import { isReg } from "../attr.ts";
import { createAheadWindows } from "./ahead-windows.ts";
import { inOrder, type Arriving } from "./arriving.ts";
import type { Source } from "./sources.ts";

/** Companions of a small file fetched in one call: files up to this size, this many, this many bytes. */
export const BATCH_FILE_MAX = 256 << 10;
/**
 * Bigger files of the directory up to this size are fetched ahead too, one at a time over the bulk
 * lane (a workflow's tasks read a directory's images one after another). Bigger ones are read in
 * ranges, or cost too much to fetch on a guess.
 */
const ALONE_FILE_MAX = 16 << 20;
const BATCH_FILES = 512;
const BATCH_BYTES = 16 << 20;
const UNWANTED_MAX = 1_000_000;
/** Records are read for one candidate per this many bytes of room (plus a few): not for 512 when 7 fit. */
const BYTES_PER_CANDIDATE = 4096;

/** A file's bytes at a version, to be fetched. */
export interface Wanted {
  ino: number;
  version: number;
  path: string;
  size: number;
  /** Its holders as read with its record (asked first; the store's list again if they fail). */
  holders?: Holders;
}

/** Another file of the same directory (fetched along with a small file when it is small too). */
export interface Sibling {
  ino: number;
  path: string;
}

/** The files of a file's directory, for fetching small ones along with it. */
export interface Siblings {
  dir: number;
  /** The files listed after the one given, in listing order (read-ahead takes those first); none if it is not listed. */
  after(ino: number): Promise<Iterable<Sibling>>;
}

/**
 * Small files fetched together: a file asked for and the other small files of its directory that
 * its holder has (workflow tasks read many small files of one directory), in one ReadFiles call, and
 * read-ahead of the next batch while they are being read. Medium files of the directory are fetched
 * ahead one at a time behind a batch, and behind the first read of a medium file.
 */
export interface Batches {
  /** A companion fetch of ino at version under way: settles when it has (arrived or not). */
  pending(ino: number, version: number): Promise<void> | undefined;
  /**
   * Other files of the directory (small, or medium: ALONE_FILE_MAX), listed after the file `after` (a
   * reader in listing order reads them next; those before it it has read), that node may hold and this
   * node has no copy of, up to a batch; fetch takes as many as the directory's window has room for.
   */
  companions(node: string, siblings: Siblings, after: number): Promise<Wanted[]>;
  /**
   * One call for first and its small companions (cut where the cache has no room for them), then
   * the medium ones one at a time: first resolves once first has arrived whole; the companions go on
   * arriving into the cache behind it (an open of one of them waits for it).
   */
  fetch(src: Source, siblings: Siblings, first: { wanted: Wanted; progress: Arriving } | undefined, extra: Wanted[]): { first: Promise<void>; all: Promise<void> };
  /** A medium file after was just fetched for a reader: the directory's next files are fetched ahead of it. */
  ahead(src: Source, siblings: Siblings, after: number): void;
  /**
   * A copy fetched ahead was opened for the first time: its directory's window grows, and once half
   * of it is read, the next files of that directory are fetched while these are being read.
   */
  used(ino: number): void;
}

export interface BatchesOptions {
  peers: PeerReads;
  store: MetadataStore;
  cache: CopyCache;
  log: Logger;
  /** A companion arrived whole into the cache: list it as this node's copy. */
  list(ino: number, version: number): void;
  /** A copy of ino at version is on its way already (asked for alone). */
  arriving(ino: number, version: number): boolean;
  /** Fetch w alone from any of its holders into pending (followed by readers as it arrives), committed once whole, else aborted. */
  fetchAlone(w: Wanted, pending: PendingCopy): Promise<void>;
  received?: (bytes: number) => void;
  /** Watched from the read of their records on: the first open of a file fetched ahead asks nothing of the store. */
  watches?: OpenWatches<Watched>;
}

export function createBatches(o: BatchesOptions): Batches {
  /** Companions being fetched, by "ino.version" (settle whether or not they arrived), and their inodes. */
  const prefetching = new Map<string, Promise<void>>();
  const fetchingIno = new Set<number>();
  /** Siblings found not worth fetching along (by inode, or "holder/inode"), so misses do not ask again. */
  const unwanted = new Set<number | string>();
  /** Read-ahead batches running, by holder and directory. */
  const readingAhead = new Set<string>();
  /** By directory; each copy fetched ahead remembers where from: opening it may start the next batch. */
  const windows = createAheadWindows<{ src: Source; siblings: Siblings }>(o.cache);

  async function companions(node: string, siblings: Siblings, after: number): Promise<Wanted[]> {
    const room = windows.room(siblings.dir);
    if (room <= 0) return [];
    const most = Math.min(BATCH_FILES, 16 + Math.ceil(room / BYTES_PER_CANDIDATE));
    const cand: Sibling[] = [];
    for (const s of await siblings.after(after)) {
      if (o.cache.versionOf(s.ino) === undefined && !fetchingIno.has(s.ino) && !unwanted.has(s.ino) && !unwanted.has(`${node}/${s.ino}`)) cand.push(s);
      if (cand.length === most) break;
    }
    if (!cand.length) return [];
    const inos = cand.map((c) => c.ino);
    const found = o.watches ? await readWatching(o.watches, inos, () => o.store.recordsAndHolders(inos, true)) : await o.store.recordsAndHolders(inos);
    if (unwanted.size > UNWANTED_MAX) unwanted.clear();
    const out: Wanted[] = [];
    for (const [i, c] of cand.entries()) {
      const f = found[i];
      // Not looked at again: what is not a small or medium file.
      if (!f || !isReg(f.r.mode) || f.r.size > ALONE_FILE_MAX) unwanted.add(c.ino);
      // A small file of another node (a directory several nodes wrote): in node's batch it would be
      // refused, and its copy, reserved meanwhile, would hold up its readers until the batch ends. Its
      // own holder's batch takes it. (A medium one is fetched alone, from any of its holders.)
      else if (f.r.size <= BATCH_FILE_MAX && f.holders.data.get(node) !== f.r.version) unwanted.add(`${node}/${c.ino}`);
      else out.push({ ino: c.ino, version: f.r.version, path: c.path, size: f.r.size, holders: f.holders });
    }
    return out;
  }

  /** Copied here already, or on its way (in another batch, or asked for alone). */
  const taken = (w: Wanted) => fetchingIno.has(w.ino) || o.cache.versionOf(w.ino) !== undefined || o.arriving(w.ino, w.version);

  function fetch(src: Source, siblings: Siblings, first: { wanted: Wanted; progress: Arriving } | undefined, extra: Wanted[]): { first: Promise<void>; all: Promise<void> } {
    const address = src.address;
    interface Item extends Wanted {
      got: number;
      /** Writes to disk still running: the file is finished after them. */
      writes: Promise<void>[];
      write(d: Pieces, at: number): void | Promise<void>;
      finish(err?: Error): void;
    }
    let firstDone: (err?: Error) => void = () => {};
    const firstArrived = first ? new Promise<void>((res, rej) => (firstDone = (err) => (err ? rej(err) : res()))) : Promise.resolve();
    const items: Item[] = [];
    if (first) {
      first.progress.got = 0;
      items.push({ ...first.wanted, got: 0, writes: [], write: inOrder(first.progress), finish: firstDone });
    }
    /**
     * Reserves w's copy in the cache and the directory's window; undefined: no room. settled: the copy
     * committed or aborted (by its filler); finish: commits or aborts it first.
     */
    const reserve = (w: Wanted): { pending: PendingCopy; settled(err?: Error): void; finish(err?: Error): void } | undefined => {
      const key = `${w.ino}.${w.version}`;
      const pending = o.cache.begin(w.ino, w.version, w.size, true);
      if (!pending) return undefined;
      let settle!: () => void;
      windows.fetching(w.ino, w.version, siblings.dir, w.size, { src, siblings });
      fetchingIno.add(w.ino);
      prefetching.set(key, new Promise<void>((res) => (settle = res)));
      const settled = (err?: Error) => {
        if (err) windows.failed(w.ino);
        else {
          windows.arrived(w.ino);
          o.list(w.ino, w.version);
        }
        prefetching.delete(key);
        fetchingIno.delete(w.ino);
        settle();
      };
      return {
        pending,
        settled,
        finish(err) {
          if (err) pending.abort();
          else pending.commit();
          settled(err);
        },
      };
    };
    /** Medium companions: each reserved only when its turn comes, so that a reader asking for a later one meanwhile fetches it itself. */
    const alone: Wanted[] = [];
    // Measured here, where the copies are reserved: batches chosen at the same time share one window.
    let budget = Math.min(BATCH_BYTES, windows.room(siblings.dir));
    for (const w of extra) {
      if (taken(w)) continue;
      if ((budget -= w.size) < 0) break;
      if (w.size > BATCH_FILE_MAX) {
        alone.push(w);
        continue;
      }
      const r = reserve(w);
      // No room in the cache until some copy is opened or arrives: the batch ends here.
      if (!r) break;
      items.push({ ...w, got: 0, writes: [], write: (d, at) => r.pending.write(d, at), finish: r.finish });
    }
    const fetchAlone = async () => {
      for (const w of alone) {
        if (taken(w)) continue;
        const r = reserve(w);
        // No room in the cache until some copy is opened or arrives.
        if (!r) return;
        try {
          await o.fetchAlone(w, r.pending);
          r.settled();
        } catch (e) {
          r.settled(e as Error);
          // Not asked of that holder again, nor the rest now: the holder, or the link, is failing.
          unwanted.add(`${src.node}/${w.ino}`);
          o.log.debug({ path: w.path, ino: w.ino, err: (e as Error).message }, "fetch ahead failed");
          return;
        }
      }
    };
    // Every small companion cut and no first: only the medium ones to fetch.
    if (!items.length) return { first: firstArrived, all: fetchAlone() };
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
          const n = byteLength(ch.data);
          if (ch.offset !== it.got || it.got + n > it.size) throw new FsError(E.EIO, `holder ${address} sent bytes of ${it.path} out of order`);
          const w = it.write(ch.data, it.got);
          if (w) it.writes.push(w);
          o.received?.(n);
          it.got += n;
          if (ch.last) end(ch.index, it.got === it.size ? undefined : new FsError(E.EIO, `holder ${address} has ${it.got} of ${it.size} bytes of ${it.path}`));
        }
      } catch (e) {
        for (const i of items.keys()) end(i, e as Error);
      }
      for (const i of items.keys()) end(i, new FsError(E.EIO, `holder ${address} did not send ${items[i]!.path}`));
      await fetchAlone();
    })();
    return { first: firstArrived, all };
  }

  /** The next files of the directory, once half its window is free again (what was fetched ahead is being read). */
  function readAhead(src: Source, siblings: Siblings, after: number): void {
    const key = `${src.node}/${siblings.dir}`;
    if (readingAhead.has(key) || !windows.drained(siblings.dir)) return;
    readingAhead.add(key);
    void (async () => {
      try {
        const extra = await companions(src.node, siblings, after);
        if (extra.length) await fetch(src, siblings, undefined, extra).all;
      } catch (e) {
        o.log.debug({ dir: siblings.dir, err: (e as Error).message }, "read-ahead stopped");
      } finally {
        readingAhead.delete(key);
      }
    })();
  }

  return {
    pending: (ino, version) => prefetching.get(`${ino}.${version}`),
    companions,
    fetch,
    ahead: readAhead,
    used(ino) {
      const f = windows.used(ino);
      if (f) readAhead(f.src, f.siblings, ino);
    },
  };
}
