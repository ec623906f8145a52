import * as fs from "node:fs";
import type { OpenWatches, Watched } from "./open-watches.ts";
import type { Holders, MetadataStore } from "../meta/store.ts";
import type { FileSlice } from "../fuse/types.ts";
import type { PeerReads } from "../peer/peer-reads.ts";
import { readCopy, type CopyCache, type Opened, type PendingCopy } from "../cache/copy-cache.ts";
import { createMemfd } from "../cache/memfd.ts";
import { FsError, E } from "../util/errno.ts";
import { allZero, writePiecesSync, type Pieces } from "../util/bytes.ts";
import { createInFlight } from "../util/in-flight.ts";
import { holderWarnings } from "./remote/holder-warnings.ts";
import { KEPT_ASIDE_MAX } from "./remote/changing-wait.ts";
import type { Logger } from "../util/log.ts";
import type { LocalDir } from "../local/local-dir.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import { keep, type KeptFile } from "./local-files.ts";
import type { CopyListing } from "./copy-listing.ts";
import type { Arriving } from "./remote/arriving.ts";
import { BATCH_FILE_MAX, createBatches, type Siblings, type Wanted } from "./remote/batches.ts";
import { createRangeReader, type RangeReader } from "./remote/ranges.ts";
import { createSources } from "./remote/sources.ts";
import { createStreams } from "./remote/streams.ts";

export { ChangingCopy } from "./remote/arriving.ts";
export type { Sibling, Siblings } from "./remote/batches.ts";
export type { RangeReader } from "./remote/ranges.ts";

const { O_RDWR, O_CREAT, O_EXCL } = fs.constants;

/**
 * Where files being fetched into the root path are made (never published, never served), then moved
 * into place whole: out of every user's reach, where no name a user picks can be in their way.
 */
const PARTIAL_DIR = `/${RESERVED_NAME}/partial`;

/** A piece of a file fetched in ranges to be written here (FetchTo.asWritten). */
const WRITTEN_PIECE = 4 << 20;

/** The bytes of a slice of a file, its descriptor closed. */
function sliceBytes(s: FileSlice): Uint8Array {
  try {
    const out = Buffer.allocUnsafe(s.length);
    let n = 0;
    for (let k; n < s.length && (k = fs.readSync(s.fd, out, n, s.length - n, s.offset + n)) > 0; ) n += k;
    return out.subarray(0, n);
  } finally {
    fs.closeSync(s.fd);
  }
}

/** Remote files from this size on are read in ranges while their copy arrives. */
const RANGED_MIN = 64 << 20;
/** Times an open of a small file has its copy made before it reads without one (through JS). */
const COPY_TRIES = 3;
/** Copies on their way an open waits to land for room in its tier before it reads without a copy. */
const ROOM_WAITS = 8;
/** What readers elsewhere do when a closed version about to be written in place is kept nowhere. */
const UNKEPT = "other nodes' reads of them wait for its close, or read it as it is written once it has been open 5 s";

/** Bytes held by other nodes, fetched from a live holder of the current version. */
export interface RemoteData {
  /**
   * Open ino at version for reading: a fd on its cached copy (in RAM or on disk; the shim serves
   * reads from it), or a reader in JS (ranges of a big file, or of one no cache tier takes or has
   * room for, read from a holder on demand while a copy arrives). holders: if just read.
   */
  open(ino: number, version: number, path: string, size: number, holders?: Holders, siblings?: Siblings): Promise<{ fd: number } | { ranges: RangeReader }>;
  /**
   * A reader of ino at version in ranges, with no copy made of it: for a version whose holder refused
   * a copy as changing (a writer there rewrites it in place, and may keep it open past any wait; it
   * serves such reads the file as it is written, and never a copy: see OpenFiles.steady).
   */
  ranged(ino: number, version: number, path: string, size: number, holders?: Holders): Promise<RangeReader>;
  /**
   * Fetch the bytes of ino at version to path in this node's root (this node is about to write them),
   * with the file's owner and mode; or to into, another local name (path is still where the holders
   * have the file). place: what puts the fetched file (at tmp) there, by default a rename over
   * whatever is at into.
   */
  fetchTo(ino: number, version: number, path: string, size: number, owner: KeptFile, to?: FetchTo): Promise<void>;
  /**
   * Keep the bytes of ino at version, read from fd (this node's root file, about to be written in
   * place), as a cached copy: other nodes reading that version get it until the writer's close
   * publishes the next. Kept only if intact() still holds once copied; small files only.
   */
  preserve(ino: number, version: number, fd: number, size: number, intact: () => boolean): Promise<void>;
  /** The cached copy of ino at version as a new fd, not counted as an open of it (a grant made as it lands). */
  peek(ino: number, version: number): { fd: number } | undefined;
  /** An open of ino's copy at version that the shim answered (from a grant): counted as an open of it. */
  used(ino: number, version: number): void;
}

/** Where RemoteData.fetchTo puts the bytes, and from which holders. */
export interface FetchTo {
  holders?: Holders;
  into?: string;
  place?: (tmp: string, into: string) => Promise<void>;
  /**
   * Read in ranges, which a holder whose writer has kept the file open a while serves as written
   * (what a reader there would read), where it refuses a whole copy: for a writer here once its
   * turn's wait is over (the last close wins).
   */
  asWritten?: boolean;
}

export interface RemoteDataOptions {
  /** This node's root path: where fetchTo puts what this node is about to write. */
  root: LocalDir;
  store: MetadataStore;
  peers: PeerReads;
  cache: CopyCache;
  nodeId: string;
  /** Where the copies this node caches are listed for the others. */
  listing: CopyListing;
  log: Logger;
  /** For metrics: an open found its copy cached (hit) or had to fetch it; bytes received from peers. */
  observe?: { cache(hit: boolean): void; received(bytes: number): void };
  /** The node's watches (VfsOptions.watches): files fetched ahead are watched from the read of their records. */
  watches?: OpenWatches<Watched>;
  /** A copy fetched ahead of any reader arrived whole into the cache. */
  landed?(ino: number, version: number): void;
}

/**
 * Other nodes' bytes for this node: which holders to ask (remote/sources), whole files streamed
 * (remote/streams), small files of a directory fetched together and read ahead (remote/batches), big
 * files read in ranges (remote/ranges); copies kept in the cache tiers and listed as this node's.
 */
export function createRemoteData(o: RemoteDataOptions): RemoteData {
  /** Fetches under way, by what they fetch: asked again meanwhile, the one fetch serves both. */
  const once = createInFlight<string>();
  /** Copies on their way into the cache, by "ino.version". */
  const arriving = new Map<string, Arriving>();
  let tmpSeq = 0;
  // Left by a run that stopped while fetching.
  o.root.remove(PARTIAL_DIR);
  const received = o.observe && ((n: number) => o.observe!.received(n));
  const sources = createSources({ store: o.store, nodeId: o.nodeId });
  // One for whole-file fetches and ranged reads alike: a dead holder's refusals share one limit.
  const warn = holderWarnings(o.log);
  const streams = createStreams({ peers: o.peers, sources, log: o.log, warn, ...(received ? { received } : {}) });
  const batches = createBatches({
    peers: o.peers,
    store: o.store,
    cache: o.cache,
    log: o.log,
    list(ino, version) {
      o.listing.added(ino, version);
      o.landed?.(ino, version);
    },
    arriving: (ino, version) => arriving.has(`${ino}.${version}`),
    fetchAlone: (w, pending) => fill(w, pending),
    ...(received ? { received } : {}),
    ...(o.watches ? { watches: o.watches } : {}),
  });
  const rangeOptions = { cache: o.cache, peers: o.peers, warn, arriving: (ino: number, version: number) => arriving.get(`${ino}.${version}`), ...(received ? { received } : {}) };

  /**
   * w's bytes into pending, by fetch (default: a fetch ahead, from any holder, those given first), followed by readers as they arrive
   * (its fd is theirs to read); committed before they are told it is whole, aborted if the fetch fails.
   */
  async function fill(w: Wanted, pending: PendingCopy, fetch = (progress: Arriving) => streams.fetchAny(w.ino, w.version, w.path, w.size, progress, { given: w.holders, ahead: true })): Promise<void> {
    const key = `${w.ino}.${w.version}`;
    await pending.ready;
    const progress: Arriving = { sink: pending, got: 0, waiters: [] };
    arriving.set(key, progress);
    try {
      await fetch(progress);
      pending.commit();
    } catch (e) {
      pending.abort();
      throw e;
    } finally {
      arriving.delete(key);
      for (const x of progress.waiters.splice(0)) x();
    }
  }

  /** Bring ino at version into the cache and list this node as holding it. */
  async function cache(ino: number, version: number, path: string, size: number, given?: Holders, siblings?: Siblings): Promise<void> {
    const key = `${ino}.${version}`;
    // Being fetched with another file: wait for that (it settles either way), then fetch it alone if it failed.
    await batches.pending(ino, version);
    if (o.cache.has(ino, version)) return;
    return once.run(key, async () => {
      let pending = o.cache.begin(ino, version, size);
      // The tier is held by copies on their way: room comes as they land (a few), else this open
      // reads from a holder without a copy, through JS.
      for (let waits = 0; !pending && waits < ROOM_WAITS; waits++) {
        await o.cache.settled();
        if (o.cache.has(ino, version)) return;
        pending = o.cache.begin(ino, version, size);
      }
      if (!pending) return;
      let fetched = false;
      await fill({ ino, version, path, size }, pending, async (progress) => {
        if (siblings && size <= BATCH_FILE_MAX) {
          const src = (await sources.of(ino, version, given))[0];
          // A holder that just refused a connection is not asked for a batch: the records of its companions would be read for nothing.
          const extra = src && !o.peers.unreachable(src.address) ? await batches.companions(src.node, siblings, ino) : [];
          if (src && extra.length) {
            try {
              await batches.fetch(src, siblings, { wanted: { ino, version, path, size }, progress }, extra).first;
              fetched = true;
            } catch (e) {
              o.log.warn({ path, ino, holder: src.address, err: (e as Error).message }, "batched fetch failed, fetching the file alone");
            }
          }
        }
        if (!fetched) await streams.fetchAny(ino, version, path, size, progress, { given });
      });
      o.listing.added(ino, version);
      // A medium file read: the directory's next ones are fetched ahead while this one is read.
      if (siblings && size > BATCH_FILE_MAX) {
        const src = (await sources.of(ino, version, given).catch(() => []))[0];
        if (src && !o.peers.unreachable(src.address)) batches.ahead(src, siblings, ino);
      }
    });
  }

  /** The holders of ino at version the store lists when asked, not those an open was given. */
  const listedNow = (ino: number, version: number) => async () => (await sources.of(ino, version)).map((s) => s.address);

  async function ranged(ino: number, version: number, path: string, size: number, given?: Holders): Promise<RangeReader> {
    const order = (await sources.of(ino, version, given)).map((s) => s.address);
    if (!order.length) throw new FsError(E.EIO, `no live node holds ${path} at version ${version}`);
    return createRangeReader(rangeOptions, ino, version, path, size, order, listedNow(ino, version));
  }

  /** The cached copy of ino at version, for a reader of this node. */
  function opened(ino: number, version: number): { fd: number } | undefined {
    const c: Opened | undefined = o.cache.open(ino, version);
    if (!c) return undefined;
    if (c.ahead) batches.used(ino);
    return { fd: c.fd };
  }

  return {
    async open(ino, version, path, size, given, siblings) {
      // No bytes to fetch: read as empty here, also while a holder writes the next version in place
      // (it refuses reads of this one, and keeps no copy aside of an empty file).
      if (size === 0) {
        const fd = createMemfd();
        if (fd >= 0) return { fd };
      }
      // Fetched ahead and still on its way is a hit too: this open did not have to ask for it.
      o.observe?.cache(o.cache.has(ino, version) || batches.pending(ino, version) !== undefined);
      const fits = o.cache.fits(size);
      if (fits && size < RANGED_MIN) {
        // Again if the copy is gone before this open took it: evicted at once by copies arriving into
        // a tier far smaller than the files read, or never made (a tier held by copies on their way).
        for (let tries = 0; tries < COPY_TRIES; tries++) {
          await cache(ino, version, path, size, given, siblings);
          const c = opened(ino, version);
          if (c) return c;
        }
      } else {
        const c = opened(ino, version);
        if (c) return c;
        if (fits) void cache(ino, version, path, size, given).catch((e: unknown) => o.log.warn({ path, ino, err: (e as Error).message }, "background copy failed"));
      }
      return { ranges: await ranged(ino, version, path, size, given) };
    },
    ranged,
    peek: (ino, version) => o.cache.open(ino, version, false),
    used(ino, version) {
      if (o.cache.use(ino, version)) batches.used(ino);
    },
    async preserve(ino, version, fd, size, intact) {
      if (size > KEPT_ASIDE_MAX || !o.cache.fits(size) || o.cache.has(ino, version)) return;
      const pending = o.cache.begin(ino, version, size);
      if (!pending) {
        o.log.warn({ ino, version }, `no room in the cache to keep the published bytes of a file about to be written; ${UNKEPT}`);
        return;
      }
      try {
        const buf = Buffer.allocUnsafe(Math.min(size, 1 << 20));
        for (let at = 0; at < size; ) {
          const n = await new Promise<number>((res, rej) => fs.read(fd, buf, 0, Math.min(buf.length, size - at), at, (e, got) => (e ? rej(e) : res(got))));
          if (n === 0) throw new FsError(E.EIO, `holds ${at} of its ${size} bytes`);
          await pending.write([buf.subarray(0, n)], at);
          at += n;
        }
        if (!intact()) throw new FsError(E.ESTALE, "written while it was copied");
        pending.commit();
      } catch (e) {
        pending.abort();
        o.log.warn({ ino, version, err: (e as Error).message }, `could not keep the published bytes of a file about to be written; ${UNKEPT}`);
      }
    },
    fetchTo(ino, version, path, size, owner, { holders: given, into = path, place, asWritten = false } = {}) {
      return once.run(`root:${into}`, async () => {
        const tmp = `${PARTIAL_DIR}/${process.pid}-${++tmpSeq}`;
        o.root.ensureDir(PARTIAL_DIR);
        let fd = o.root.openFile(tmp, O_RDWR | O_CREAT | O_EXCL, 0o600);
        try {
          const src = o.cache.open(ino, version);
          if (src !== undefined) {
            try {
              // In blocks small enough that a few bytes amid zeros take about as much disk.
              const buf = Buffer.allocUnsafe(64 << 10);
              for (let off = 0, n; (n = readCopy(src, buf, off)) > 0; off += n) if (!allZero(buf.subarray(0, n))) fs.writeSync(fd, buf, 0, n, off);
            } finally {
              fs.closeSync(src.fd);
            }
          } else if (asWritten) {
            const from = await ranged(ino, version, path, size, given);
            try {
              for (let off = 0; off < size; ) {
                const got = await from.read(off, WRITTEN_PIECE, off === 0);
                const bytes = "fd" in got ? sliceBytes(got) : got;
                if (!bytes.length) throw new FsError(E.EIO, `${path} ended at ${off} of its ${size} bytes`);
                if (!allZero(bytes)) fs.writeSync(fd, bytes, 0, bytes.length, off);
                off += bytes.length;
              }
            } finally {
              from.close();
            }
          } else {
            const sink = {
              write: (d: Pieces, at: number) => {
                if (!d.every(allZero)) writePiecesSync(fd, d, at);
              },
              fd,
            };
            await streams.fetchAny(ino, version, path, size, { sink, got: 0, waiters: [] }, { given, holes: true });
          }
          // This node's own file from now on: holes stay holes, the holder's and those of zeros a
          // copy kept as bytes (a sparse file of terabytes takes the disk its data takes).
          fs.ftruncateSync(fd, size);
          keep(o.root, fd, owner);
          const done = fd;
          // Given up before the close: a failed close frees the number too, and the rename may fail after it.
          fd = -1;
          fs.closeSync(done);
          if (place) await place(tmp, into);
          else o.root.rename(tmp, into);
        } catch (e) {
          try {
            if (fd >= 0) fs.closeSync(fd);
          } catch {
            // Its number is freed either way.
          }
          o.root.remove(tmp);
          throw e;
        }
      });
    },
  };
}
