import type { Holders, Inode } from "../meta/store.ts";
import { isReg } from "./attr.ts";

/** What was read of a file being watched: its record and holders as of that read. */
export interface Watched {
  r: Inode;
  holders: Holders;
  /** Read, but the store could not note the watch (RecordAndHolders): not kept. */
  unwatched?: true;
}

/** Files a node keeps what it read of, at most. */
const WATCHED_MAX = 100_000;

/** The watches of a node's files: shared by its opens and its read-ahead (which begins to watch what it fetches). */
export const createWatches = (): OpenWatches<Watched> => createOpenWatches<Watched>(WATCHED_MAX);

/**
 * What this node read of the files it watches (MetadataStore.recordAndHolders with watch): while the
 * store says watches hold, an open of one is answered from what was read, without a round trip. A
 * read whose file changed while it was on its way is not kept: the change may have been heard before
 * its answer, and the answer is then older than what was heard.
 */
export interface OpenWatches<T> {
  /** Before the store is asked for ino: what keep needs. */
  asking(ino: number): Asked;
  /** What the store answered to asked, kept unless its file changed since it was asked; none: the question failed. */
  keep(asked: Asked, value: T | undefined): void;
  get(ino: number): T | undefined;
  /** These files changed (heard from another node, or made here): what is kept of them goes, and answers on their way are not kept. */
  drop(inos: Iterable<number>): void;
  /** This node changed ino: answers on their way are not kept (what is kept goes with learn, if it is another state). */
  changing(ino: number): void;
  /** Everything goes: changes may have been missed. */
  clear(): void;
  readonly size: number;
}

/** A question on its way to the store. */
export interface Asked {
  readonly ino: number;
  changed: boolean;
}

export function createOpenWatches<T>(limit: number): OpenWatches<T> {
  const kept = new Map<number, T>();
  const asking = new Map<number, Set<Asked>>();
  const stale = (ino: number) => {
    for (const a of asking.get(ino) ?? []) a.changed = true;
  };
  return {
    asking(ino) {
      const a: Asked = { ino, changed: false };
      let s = asking.get(ino);
      if (!s) asking.set(ino, (s = new Set()));
      s.add(a);
      return a;
    },
    keep(a, value) {
      const s = asking.get(a.ino);
      s?.delete(a);
      if (s?.size === 0) asking.delete(a.ino);
      if (a.changed || value === undefined) return;
      kept.delete(a.ino);
      kept.set(a.ino, value);
      // The oldest go first: this node stays a watcher of those in the store, which costs their next writer one acknowledgement.
      if (kept.size > limit) kept.delete(kept.keys().next().value!);
    },
    get: (ino) => kept.get(ino),
    drop(inos) {
      for (const ino of inos) {
        kept.delete(ino);
        stale(ino);
      }
    },
    changing: stale,
    clear() {
      kept.clear();
      for (const s of asking.values()) for (const a of s) a.changed = true;
    },
    get size() {
      return kept.size;
    },
  };
}

/**
 * The records of inos as read (by the store, watching them from then on), each regular file's kept
 * as its watch unless the file changed while it was read; a failed read keeps none.
 */
export async function readWatching(watches: OpenWatches<Watched>, inos: number[], read: () => Promise<(Watched | undefined)[]>): Promise<(Watched | undefined)[]> {
  const asked = inos.map((ino) => watches.asking(ino));
  let found: (Watched | undefined)[] | undefined;
  try {
    found = await read();
    return found;
  } finally {
    asked.forEach((a, i) => {
      const f = found?.[i];
      watches.keep(a, f && isReg(f.r.mode) && !f.unwatched ? f : undefined);
    });
  }
}

/**
 * w, telling `ended` of every file whose watch it drops (one ino) or clears (none): what was granted
 * on the strength of a watch (the shim's opens) must go with it.
 */
export function endingWith<T>(w: OpenWatches<T>, ended: (ino?: number) => void): OpenWatches<T> {
  return {
    asking: (ino) => w.asking(ino),
    keep: (asked, value) => w.keep(asked, value),
    get: (ino) => w.get(ino),
    drop(inos) {
      const all = [...inos];
      for (const ino of all) ended(ino);
      w.drop(all);
    },
    changing: (ino) => w.changing(ino),
    clear() {
      ended();
      w.clear();
    },
    get size() {
      return w.size;
    },
  };
}
