import type { MetadataStore } from "../meta/store.ts";
import type { RecentSet } from "../util/recent-set.ts";
import { readWatching, type OpenWatches, type Watched } from "./open-watches.ts";

/** Files of one directory watched in one read of the store, at most. */
const OWN_AHEAD = 256;

/**
 * Watches of the files this node wrote, begun a directory at a time. A reader's first open of such a
 * file asks the store for its record (close-to-open: another node may have written it since) and
 * watches it from then on; a task reading one of a node's files reads its siblings next (a workflow's
 * inputs, the outputs of the task before), so the others this node wrote in that directory are
 * watched with one read too, and their first opens ask nothing of the store.
 */
export interface OwnWatches {
  /** A reader opened ino, a file of dir this node wrote, with no watch of it: watch the others of dir. */
  opened(dir: number, ino: number): void;
}

export interface OwnWatchesOptions {
  store: Pick<MetadataStore, "recordsAndHolders">;
  watches: OpenWatches<Watched>;
  writtenHere: RecentSet<number>;
  /** dir's listing as this node holds it (none: not loaded, nothing is read). */
  entries(dir: number): ReadonlyMap<string, number> | undefined;
}

export function createOwnWatches(o: OwnWatchesOptions): OwnWatches {
  /** Directories a read is under way for: one at a time each. */
  const reading = new Set<number>();
  return {
    opened(dir, ino) {
      const l = o.entries(dir);
      if (!l || reading.has(dir)) return;
      const inos: number[] = [];
      for (const i of l.values()) {
        if (i <= 0 || i === ino || !o.writtenHere.has(i) || o.watches.get(i)) continue;
        inos.push(i);
        if (inos.length === OWN_AHEAD) break;
      }
      if (!inos.length) return;
      reading.add(dir);
      readWatching(o.watches, inos, () => o.store.recordsAndHolders(inos, true))
        .catch(() => undefined)
        .finally(() => reading.delete(dir));
    },
  };
}
