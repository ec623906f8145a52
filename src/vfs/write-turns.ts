import type { MetadataStore } from "../meta/store.ts";
import type { Logger } from "../util/log.ts";
import type { DataChanges } from "./data-changes.ts";

/** A node's turn to write a file lasts this long unless renewed (a crashed writer's turn runs out). */
const WRITE_LEASE_MS = 60_000;
/** Longest an open for writing waits for another node's writer to close. */
const WRITE_WAIT_MS = 10_000;
/** The turn comes back just after the change notice of the writer's close: look again this often. */
const LEASE_POLL_MS = 50;

/**
 * Writers on different nodes take turns (a lease in the store): an open for writing waits for
 * another node's writer to close, then reads what it wrote — so appends from several nodes all land.
 * A node that keeps a file open for writing past WRITE_WAIT_MS is not waited for longer: then the
 * last close wins, as before. Every writer on this node shares the node's turn: each take is a
 * share, given back once, and the turn goes back to the store with the last share. A writer whose
 * open is still under way holds its share from the take on, so another's close meanwhile keeps the
 * turn here (else another node's writer took it, and this node's close then published over its
 * writes).
 */
export interface WriteTurns {
  /** Take a share of ino's turn (waiting, bounded); false when another node kept it too long (no share then). */
  take(ino: number): Promise<boolean>;
  /** Give a share back; the last one gives the turn back (the store is told behind). */
  give(ino: number): void;
  has(ino: number): boolean;
}

export function createWriteTurns(o: { store: MetadataStore; nodeId: string; log: Logger; changes: DataChanges }): WriteTurns {
  /** Shares of each turn this node holds. */
  const shares = new Map<number, number>();
  const share = (ino: number) => void shares.set(ino, (shares.get(ino) ?? 0) + 1);
  return {
    async take(ino) {
      if (shares.has(ino)) return (share(ino), true);
      const deadline = Date.now() + WRITE_WAIT_MS;
      for (;;) {
        const change = o.changes.next(ino);
        try {
          if (await o.store.takeWriteLease(ino, o.nodeId, WRITE_LEASE_MS)) {
            share(ino);
            return true;
          }
          if (Date.now() >= deadline) {
            o.log.warn({ ino }, "another node has been writing this file for long: writing at the same time (the last close wins)");
            return false;
          }
          // Its close publishes new bytes (a change notice), and gives the turn back just after.
          await change.wait(Math.min(LEASE_POLL_MS, deadline - Date.now()));
        } finally {
          change.cancel();
        }
      }
    },
    give(ino) {
      const left = (shares.get(ino) ?? 0) - 1;
      if (left > 0) return void shares.set(ino, left);
      shares.delete(ino);
      o.store.releaseWriteLease(ino, o.nodeId).catch((e: unknown) => o.log.warn({ ino, err: (e as Error).message }, "could not give back the write turn; it expires by itself"));
    },
    has: (ino) => shares.has(ino),
  };
}
