import type { DirListing, Inode, Invalidation, MetadataStore } from "../meta/store.ts";
import { createWatches, type OpenWatches, type Watched } from "./open-watches.ts";
import type { PathCache } from "./paths.ts";
import { answersFor, withNameAdded } from "./attr.ts";

/**
 * What this node keeps of the shared metadata: records seen lately, and complete listings of the
 * directories it works in. Kept current by this node's own changes and by other nodes' invalidations.
 */
export interface MetaCache {
  /**
   * Remember a record fetched from the store; named false: one made here from a record held (a data
   * update), whose name may be older than what the path cache knows, so its names are not taken.
   */
  learn(r: Inode, named?: boolean): Inode;
  /** A record fetched lately enough to answer for it (as long as the kernel may cache attributes). */
  fresh(ino: number): Inode | undefined;
  /**
   * What the listing of parent says of name: its inode (0: exists, inode not known yet), null: no such
   * name, undefined: no listing yet (one is loaded in the background).
   */
  listed(parent: number, name: string): number | null | undefined;
  /**
   * A name missing from dir's listing (listed: null) is missing in the store too: this node watches
   * dir (MetadataStore.listDir with watch) and its feed is current (watchesHold). When not so,
   * the watch may be begun again in the background.
   */
  surelyAbsent(dir: number): boolean;
  /**
   * The directory's listing read from the store now (for readdir). A cached listing learns the
   * inodes of names it knows without one (other nodes' creates: read-ahead passes over those), unless
   * a change to the directory was heard meanwhile (the store may have been read before it); without
   * one, the listing is loaded in the background.
   */
  readListing(dir: number): Promise<DirListing[]>;
  /** A listed name of dir, inode ino, was looked up with no record at hand (see missed() in createMetaCache). */
  missed(dir: number, ino: number): void;
  /** How many changes of dir's listing were seen: what was derived from it stays right while this does not move. */
  listingChanges(dir: number): number;
  /** The directory's listing, if loaded: name -> inode (0: not known yet). */
  entries(dir: number): ReadonlyMap<string, number> | undefined;
  /** A name appeared in or left a directory. */
  dirChanged(dir: number, add?: [string, number], remove?: string): void;
  dropListing(dir: number): void;
  /** Run a namespace change in these directories (their records are dropped around it). */
  changing<T>(dirs: number[], change: () => Promise<T>): Promise<T>;
  forget(ino: number): void;
  invalidate(inv: Invalidation): void;
  resync(): void;
  /** Files this node watches (see OpenWatches): dropped here with every change of their records. */
  readonly watches: OpenWatches<Watched>;
}

/**
 * Another copy of what this cache answers for names (the FUSE shim's entries): told of records
 * prefetched with their names, and of everything dropped here, as it is dropped.
 */
export interface MetaMirror {
  /** Records of names in dir just prefetched, good for ttlMs. */
  prefetched(dir: number, named: [string, Inode][], ttlMs: number): void;
  /**
   * A record learned (not of a file open here), good for ttlMs: what was kept of the inode (its names)
   * is dropped, and its attributes kept instead, in one step.
   */
  learned(r: Inode, ttlMs: number): void;
  dropName(dir: number, name: string): void;
  /** Every name of ino. */
  dropInode(ino: number): void;
  /** Every name in dir. */
  dropDir(dir: number): void;
  dropAll(): void;
  /** Whole listings, for a mirror that answers for names missing from them: dir's as it now is, then each change of it. */
  listed?(dir: number, names: Iterable<string>): void;
  listChanged?(dir: number, name: string, present: boolean): void;
  unlisted?(dir: number): void;
  unlistedAll?(): void;
}

export interface MetaCacheOptions {
  store: MetadataStore;
  paths: PathCache;
  attrCacheMs: number;
  /** Records not to prefetch (open files: their state lives elsewhere). */
  skipPrefetch(ino: number): boolean;
  /** Hears every change of a listing (see dirChanged). */
  onDirChanged?(dir: number, add?: [string, number], remove?: string): void;
  mirror?: MetaMirror;
  /** The node's watches, if shared with another part (its read-ahead); else its own. */
  watches?: OpenWatches<Watched>;
  /** Watch the directories listed (a node of a cluster: others make names in them). */
  watchDirs?: boolean;
  /** Directories of more names than this are not prefetched whole, but a window at a time (PREFETCH_MAX). */
  prefetchMax?: number;
}

const RECENT_MAX = 200_000;
const LISTED_MAX = 2_000_000;
/**
 * Directories of more names are not prefetched whole as their listing loads (a lookup of one name
 * would read them all): a name looked up there with no record at hand reads the records of the names
 * made after it instead, PREFETCH_BATCH of them (readWindow).
 */
const PREFETCH_MAX = 20_000;
/**
 * Records read in one call while prefetching: a lookup that misses waits behind at most one such
 * call on the connection (1,000 records take Redis about 8 ms, a quarter of that 2).
 */
const PREFETCH_BATCH = 250;
/** Names a window passes over at most looking for records not held fresh (each miss reads one). */
const WINDOW_SCAN = 4 * PREFETCH_BATCH;
/** Misses in a listed directory before its records are read again: this many, or one per this many names. */
const REFETCH_MISSES = 4;
const REFETCH_SHARE = 64;
/**
 * A directory another node made a name in lately is not watched again until it has been this quiet:
 * each new watch costs the next name made elsewhere a wait for this node's acknowledgement, which
 * nodes making names in one directory by turns would otherwise pay every time.
 */
const REWATCH_QUIET_MS = 1000;
const FOREIGN_ADDS_MAX = 100_000;

/** The index of the first of n items (sorted by inode number, inoAt) whose inode number is ino or more. */
function firstInoAtLeast(n: number, inoAt: (i: number) => number, ino: number): number {
  let lo = 0;
  let hi = n;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (inoAt(mid) < ino) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** A listing too big to prefetch whole: its inode numbers sorted (as when first needed), and whether a window of them is being read. */
interface Windows {
  inos: Float64Array;
  reading: boolean;
}

export function createMetaCache(o: MetaCacheOptions): MetaCache {
  const { store, paths, mirror } = o;
  const recent = new Map<number, { rec: Inode; until: number }>();
  const listings = new Map<number, Map<string, number>>();
  let listedNames = 0;
  /** Changes seen per directory, so a listing loaded while one happened is not trusted. */
  const dirChanges = new Map<number, number>();
  /** Counts resyncs: a listing loaded across one may lack changes that were never heard. */
  let resyncs = 0;
  /** Names looked up in each listed directory without a record at hand, since its records were last read. */
  const misses = new Map<number, number>();
  const refetching = new Set<number>();
  /** A name looked up in a directory whose records are being read, not read yet: read next from there. */
  const prefetchFrom = new Map<number, number>();
  /** Per listing too big to prefetch whole: gone with it. */
  const windows = new WeakMap<Map<string, number>, Windows>();
  const prefetchMax = o.prefetchMax ?? PREFETCH_MAX;
  /** Directories whose listing is loading, with the changes seen meanwhile. */
  const loading = new Map<number, [([string, number] | undefined), (string | undefined)][]>();
  const watches = o.watches ?? createWatches();
  /** Directories this node watches whose listing is loaded (see surelyAbsent). */
  const watchedDirs = new Set<number>();
  /** Per directory: names other nodes made in it heard so far, and when the last one was. */
  const foreignAdds = new Map<number, { n: number; at: number }>();
  const rewatching = new Set<number>();
  const quiet = (dir: number) => Date.now() - (foreignAdds.get(dir)?.at ?? -Infinity) >= REWATCH_QUIET_MS;
  const addsHeard = (dir: number) => foreignAdds.get(dir)?.n ?? 0;

  /** ino's record, if held fresh. */
  function held(ino: number): Inode | undefined {
    const c = recent.get(ino);
    return c && c.until > Date.now() ? c.rec : undefined;
  }

  function learn(r: Inode, named = true): Inode {
    const w = watches.get(r.ino);
    // Any other state of the file than the one watched (this node's own change of it, mostly).
    if (w && (w.r.version !== r.version || w.r.size !== r.size || w.r.nlink !== r.nlink || w.r.parent !== r.parent || w.r.name !== r.name || w.r.mode !== r.mode || w.r.uid !== r.uid || w.r.gid !== r.gid)) watches.drop([r.ino]);
    if (named) paths.learn(r);
    if (o.attrCacheMs > 0) {
      // Bounded: past the limit the first learned tenth goes (a Map iterates in insertion order), here
      // and in the mirror. A record learned again keeps its place: deleted and set again, its key would
      // leave an entry behind in its bucket each time, which JSC walks on every later set of it until
      // the table is rebuilt (a directory gaining 20,000 files: 50 us a create, measured).
      if (recent.size >= RECENT_MAX) {
        let n = RECENT_MAX / 10;
        for (const k of recent.keys()) {
          dropRecord(k);
          if (--n === 0) break;
        }
      }
      const until = Date.now() + o.attrCacheMs;
      const c = recent.get(r.ino);
      if (c) {
        c.rec = r;
        c.until = until;
      } else recent.set(r.ino, { rec: r, until });
    }
    if (o.attrCacheMs > 0 && !o.skipPrefetch(r.ino)) mirror?.learned(r, o.attrCacheMs);
    else mirror?.dropInode(r.ino);
    return r;
  }

  function apply(l: Map<string, number>, add?: [string, number], remove?: string): void {
    if (remove !== undefined && l.delete(remove)) listedNames--;
    if (add !== undefined) {
      if (!l.has(add[0])) listedNames++;
      l.set(add[0], add[1]);
    }
  }

  /** A record no longer to be answered from, here or by the mirror. */
  function dropRecord(ino: number): void {
    recent.delete(ino);
    mirror?.dropInode(ino);
  }

  function dirChanged(dir: number, add?: [string, number], remove?: string): void {
    dirChanges.set(dir, (dirChanges.get(dir) ?? 0) + 1);
    o.onDirChanged?.(dir, add, remove);
    if (add !== undefined) mirror?.dropName(dir, add[0]);
    if (remove !== undefined) mirror?.dropName(dir, remove);
    const l = listings.get(dir);
    if (!l) return void loading.get(dir)?.push([add, remove]);
    const names = [remove, add?.[0]].filter((n) => n !== undefined);
    const had = names.map((n) => l.has(n));
    apply(l, add, remove);
    // What changed of each name (one name may go and come back in one change) goes to the mirror.
    names.forEach((n, i) => {
      if (l.has(n) !== had[i]) mirror?.listChanged?.(dir, n, l.has(n));
    });
  }

  function dropListing(dir: number): void {
    // Only a listing the mirror was told of (see loadListing): it keeps the others' directories for the shim's creates.
    const told = !o.watchDirs || watchedDirs.delete(dir);
    mirror?.dropDir(dir);
    misses.delete(dir);
    const l = listings.get(dir);
    if (l) listedNames -= l.size;
    listings.delete(dir);
    if (told) mirror?.unlisted?.(dir);
  }

  /**
   * Load a directory's listing, then (for directories of moderate size) its entries' records. Changes
   * seen while it loads are replayed on it in order: each is idempotent, so the last one for a name
   * wins whether the loaded listing already had it or not.
   */
  async function loadListing(dir: number): Promise<void> {
    if (loading.has(dir) || listings.has(dir)) return;
    const changes: [([string, number] | undefined), (string | undefined)][] = [];
    loading.set(dir, changes);
    const epoch = resyncs;
    const watch = o.watchDirs === true && quiet(dir);
    const adds = addsHeard(dir);
    try {
      const ents = await store.listDir(dir, watch);
      if (epoch !== resyncs) return;
      if (listedNames + ents.length > LISTED_MAX) {
        listings.clear();
        watchedDirs.clear();
        mirror?.unlistedAll?.();
        listedNames = 0;
      }
      const l = new Map(ents.map((e) => [e.name, e.ino]));
      listedNames += ents.length;
      for (const [add, remove] of changes) apply(l, add, remove);
      listings.set(dir, l);
      // A name another node made, heard while this was read, may be one the store had made after
      // the watch began (this node then watches no more) or before it.
      if (watch && addsHeard(dir) === adds) watchedDirs.add(dir);
      // Another node's name may be missing from an unwatched listing: the mirror is not told of it.
      if (!o.watchDirs || watchedDirs.has(dir)) mirror?.listed?.(dir, l.keys());
      if (ents.length <= prefetchMax) await prefetch(dir, ents, l, epoch);
    } finally {
      loading.delete(dir);
    }
  }

  /**
   * Learn the records of ents, entries of dir's listing l, in batches; stop at a change of dir. In
   * the order of their inode numbers, which is the order they were made in: a walk through a
   * directory in that order (a workflow's files, a `stat` of f0, f1, ...) finds each record read
   * before it asks. A name looked up meanwhile whose record is not read yet (a walk in another
   * order, or from the middle) moves the reading there (missed).
   */
  async function prefetch(dir: number, ents: DirListing[], l: Map<string, number>, epoch: number): Promise<void> {
    const order = [...ents].sort((a, b) => a.ino - b.ino);
    const read = new Uint8Array(order.length);
    /** The first entry of order not read yet. */
    let next = 0;
    prefetchFrom.delete(dir);
    try {
      while (next < order.length) {
        const gen = dirChanges.get(dir);
        const from = prefetchFrom.get(dir);
        prefetchFrom.delete(dir);
        let at = from === undefined ? next : firstInoAtLeast(order.length, (i) => order[i]!.ino, from);
        if (at >= order.length || read[at]) at = next;
        const part: DirListing[] = [];
        for (let k = at; k < order.length && part.length < PREFETCH_BATCH; k++) if (!read[k]) (part.push(order[k]!), (read[k] = 1));
        while (next < order.length && read[next]) next++;
        const recs = await store.getMany(part.map((e) => e.ino));
        if (dirChanges.get(dir) !== gen || epoch !== resyncs || listings.get(dir) !== l) return;
        took(dir, l, recs, (j) => part[j]!.name);
      }
    } finally {
      prefetchFrom.delete(dir);
    }
  }

  /**
   * Learn records read for names of dir's listing l, the name of the j-th being nameOf(j), and hand
   * the mirror those it may answer lookups of.
   */
  function took(dir: number, l: Map<string, number>, recs: (Inode | undefined)[], nameOf: (j: number) => string): void {
    const named: [string, Inode][] = [];
    recs.forEach((r, j) => {
      // Held fresh: learned as this was read, perhaps after it (a change here), or needs no reading.
      if (!r || o.skipPrefetch(r.ino) || held(r.ino)) return;
      learn(r);
      // The listing read may be older than the record (a rename heard before this batch began): only
      // a name the listing still gives this inode, and that its record has too, is handed on.
      const name = nameOf(j);
      if (l.get(name) === r.ino && answersFor(r, dir, name)) named.push([name, r]);
    });
    if (o.attrCacheMs > 0) mirror?.prefetched(dir, named, o.attrCacheMs);
  }

  /**
   * A name of dir's listing l (too big to prefetch whole), inode ino, was looked up with no record at
   * hand: read the records of the next PREFETCH_BATCH names by inode number from it (made after it,
   * most likely looked up next), those held fresh passed over. A window is read at a time per
   * directory; a name looked up meanwhile outside what it reads is read from next. The names are
   * the records' own (a file of several names is left to its lookups).
   */
  async function readWindow(dir: number, l: Map<string, number>, ino: number): Promise<void> {
    let w = windows.get(l);
    if (!w) windows.set(l, (w = { inos: Float64Array.from(l.values()).sort(), reading: false }));
    if (w.reading) return void prefetchFrom.set(dir, ino);
    const { inos } = w;
    const epoch = resyncs;
    w.reading = true;
    try {
      for (let from: number | undefined = ino; from !== undefined; from = prefetchFrom.get(dir)) {
        prefetchFrom.delete(dir);
        const gen = dirChanges.get(dir);
        const part: number[] = [];
        const at = firstInoAtLeast(inos.length, (i) => inos[i]!, from);
        for (let k = at; k < inos.length && k < at + WINDOW_SCAN && part.length < PREFETCH_BATCH; k++) {
          const i = inos[k]!;
          if (i > 0 && !held(i)) part.push(i);
        }
        if (!part.length) continue;
        const recs = await store.getMany(part);
        if (dirChanges.get(dir) !== gen || epoch !== resyncs || listings.get(dir) !== l) return;
        took(dir, l, recs, (j) => recs[j]?.name ?? "");
      }
    } finally {
      w.reading = false;
      prefetchFrom.delete(dir);
    }
  }

  /**
   * Read again the records a listed directory's names have none of here: names that came after its
   * listing was loaded (other nodes' creates), or whose records expired. Once misses pass a share of
   * the directory (a reader going through it), so a few misses in a big one never read it all.
   */
  function missed(dir: number, ino: number): void {
    const l = listings.get(dir);
    if (l && (loading.has(dir) || refetching.has(dir))) {
      if (ino) prefetchFrom.set(dir, ino);
      return;
    }
    if (l && l.size > prefetchMax && ino) return void readWindow(dir, l, ino).catch(() => {});
    if (!l || l.size > prefetchMax) return;
    const n = (misses.get(dir) ?? 0) + 1;
    if (n < Math.max(REFETCH_MISSES, l.size / REFETCH_SHARE)) return void misses.set(dir, n);
    misses.delete(dir);
    refetching.add(dir);
    const epoch = resyncs;
    // readListing: names heard without an inode learn it, so their records can be read too.
    readListing(dir)
      .then((ents) => (epoch === resyncs && listings.get(dir) === l ? prefetch(dir, ents.filter((e) => !held(e.ino)), l, epoch) : undefined))
      .catch(() => {})
      .finally(() => refetching.delete(dir));
  }

  /**
   * A name was added to dir, which then had these times and link count: a record of it held here
   * is brought up to them, rather than read again (by every node, after every create elsewhere).
   * Its other fields are those of the store still: any other change of them comes with a message
   * of its own, and drops it. False: nothing held to bring up to date.
   */
  function caughtUp(dir: number, ctime: bigint, nlink: number): boolean {
    const c = recent.get(dir);
    const left = c ? c.until - Date.now() : 0;
    if (!c || left <= 0) return false;
    // Read after the change already (a directory's ctime only moves forward with its changes); not
    // so a record this node made up (makeAhead: its own clock), which can be ahead of a mkdir
    // elsewhere it lacks: its link count tells.
    if (c.rec.ctime >= ctime && c.rec.nlink !== nlink) return false;
    if (c.rec.ctime < ctime) c.rec = withNameAdded(c.rec, ctime, nlink);
    // Given to the mirror again either way: the kernel's invalidation of the change took the shim's
    // copy with it, and the kernel's getattr after it would otherwise come to JS.
    if (!o.skipPrefetch(dir)) mirror?.learned(c.rec, left);
    else mirror?.dropInode(dir);
    return true;
  }

  /**
   * Watch dir again (another node's name ended the last watch): its listing here is kept current by
   * the feed, so the store's listing as the watch begins must be the same (else it is dropped, and
   * loaded again when next needed). Any change of dir heard meanwhile: tried again later.
   */
  function rewatch(dir: number): void {
    const l = listings.get(dir);
    if (!l || l.size > prefetchMax || rewatching.has(dir) || loading.has(dir) || !quiet(dir)) return;
    rewatching.add(dir);
    const since = dirChanges.get(dir);
    const epoch = resyncs;
    store
      .listDir(dir, true)
      .then((ents) => {
        if (epoch !== resyncs || listings.get(dir) !== l || dirChanges.get(dir) !== since) return;
        if (ents.length !== l.size || !ents.every((e) => l.has(e.name))) return dropListing(dir);
        watchedDirs.add(dir);
        mirror?.listed?.(dir, l.keys());
      })
      .catch(() => {})
      .finally(() => rewatching.delete(dir));
  }

  async function readListing(dir: number): Promise<DirListing[]> {
    const cached = listings.get(dir);
    const since = dirChanges.get(dir);
    if (!cached) void loadListing(dir).catch(() => {});
    const ents = await store.listDir(dir);
    if (cached && listings.get(dir) === cached && dirChanges.get(dir) === since) {
      let taught = false;
      for (const e of ents) if (cached.get(e.name) === 0) (cached.set(e.name, e.ino), (taught = true));
      if (taught) dirChanges.set(dir, (dirChanges.get(dir) ?? 0) + 1);
    }
    return ents;
  }

  return {
    learn,
    fresh: held,
    listed(parent, name) {
      const l = listings.get(parent);
      if (!l) {
        void loadListing(parent).catch(() => {});
        return undefined;
      }
      return l.get(name) ?? null;
    },
    surelyAbsent(dir) {
      if (!o.watchDirs) return false;
      if (watchedDirs.has(dir)) return store.watchesHold();
      rewatch(dir);
      return false;
    },
    readListing,
    missed,
    entries: (dir) => listings.get(dir),
    listingChanges: (dir) => dirChanges.get(dir) ?? 0,
    dirChanged,
    dropListing,
    async changing(dirs, change) {
      // Dropped before and after: a getattr that raced with the change cannot leave a stale record.
      for (const d of dirs) dropRecord(d);
      try {
        return await change();
      } finally {
        for (const d of dirs) dropRecord(d);
      }
    },
    forget(ino) {
      paths.forget(ino);
      dropRecord(ino);
      watches.drop([ino]);
    },
    invalidate(inv) {
      watches.drop(inv.inodes);
      watches.drop(inv.data);
      for (const [dir, name] of inv.removed) dirChanged(dir, undefined, name);
      for (const [dir, name, ino] of inv.added) {
        // The store took this node off the directory's watchers as it made the name (listDir).
        if (watchedDirs.delete(dir)) mirror?.unlisted?.(dir);
        const n = addsHeard(dir) + 1;
        foreignAdds.delete(dir);
        foreignAdds.set(dir, { n, at: Date.now() });
        // Bounded: the oldest go (a Map iterates in insertion order); those of loads under way are recent.
        if (foreignAdds.size > FOREIGN_ADDS_MAX) for (const k of [...foreignAdds.keys()].slice(0, FOREIGN_ADDS_MAX / 10)) foreignAdds.delete(k);
        dirChanged(dir, [name, ino ?? 0]);
      }
      const touched = new Map(inv.touched?.map(([dir, ctime, nlink]) => [dir, { ctime: BigInt(ctime), nlink }]));
      for (const ino of inv.inodes) {
        const t = touched.get(ino);
        if (t && caughtUp(ino, t.ctime, t.nlink)) continue;
        dropRecord(ino);
        if (inv.removed.length) dropListing(ino);
        paths.forget(ino);
      }
    },
    watches,
    resync() {
      watches.clear();
      watchedDirs.clear();
      resyncs++;
      misses.clear();
      mirror?.dropAll();
      mirror?.unlistedAll?.();
      listings.clear();
      listedNames = 0;
      recent.clear();
      for (const d of dirChanges.keys()) dirChanged(d);
      paths.clear();
    },
  };
}
