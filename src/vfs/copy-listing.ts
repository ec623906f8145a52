import type { Logger } from "../util/log.ts";
import type { MetadataStore } from "../meta/store.ts";

/** How long a new copy waits to be listed, with the others made meanwhile. */
const LIST_AFTER_MS = 100;

/**
 * The copies in this node's cache as the store lists them, for other nodes to read from. Listing is
 * a hint, never needed for a read here: new copies are listed a little behind, together (a workflow
 * fetching file after file would otherwise pay a store call for each); an evicted copy is unlisted
 * at once, and one evicted before its listing went out is never listed.
 */
export interface CopyListing {
  added(ino: number, version: number): void;
  evicted(ino: number, version: number): void;
}

export interface CopyListingOptions {
  store: MetadataStore;
  nodeId: string;
  /** This run of the node: its copies are listed under it. */
  startedAt: number;
  log: Logger;
}

export function createCopyListing(o: CopyListingOptions): CopyListing {
  let pending = new Map<string, { ino: number; version: number }>();
  function send(): void {
    const copies = [...pending.values()];
    pending = new Map();
    if (!copies.length) return;
    o.store.addCachedCopies(o.nodeId, o.startedAt, copies).catch((e: unknown) => o.log.warn({ copies: copies.length, err: (e as Error).message }, "could not list cached copies"));
  }
  return {
    added(ino, version) {
      pending.set(`${ino}.${version}`, { ino, version });
      // Not keeping the process up for it: a node that stops has no copies to offer.
      if (pending.size === 1) setTimeout(send, LIST_AFTER_MS).unref();
    },
    evicted(ino, version) {
      if (pending.delete(`${ino}.${version}`)) return;
      o.store.dropCachedCopy(ino, o.nodeId, version).catch((e: unknown) => o.log.warn({ ino, err: (e as Error).message }, "could not unlist an evicted copy"));
    },
  };
}
