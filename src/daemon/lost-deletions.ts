import type { LocalDir } from "../local/local-dir.ts";
import type { DeletionJournal } from "../local/deletion-journal.ts";
import { fileIdentity, type MetadataStore } from "../meta/store.ts";
import { createPathCache } from "../vfs/paths.ts";
import type { Logger } from "../util/log.ts";
import { E, errnoOf } from "../util/errno.ts";

/**
 * How far back a deletion is looked for: well past what Redis loses in a power cut (the last second
 * of an everysec AOF) or a failover (a replica's lag). A restore from an older copy is found by the
 * inode counter (RollbackGuard) and lost further back than this: its deletions are not made again.
 */
export const LOST_DELETION_WINDOW_MS = 60 * 60_000;

const BATCH = 500;

/**
 * Deletions Redis lost after this node had removed the file's bytes (DeletionJournal): the file is
 * back in the namespace, at the version this node deleted, listed as held here, and not on this
 * disk. Each of its names is unlinked again while it still names that file at that version (a write
 * or a new file under the name since, even one made while this runs, stays); this node's disk is
 * left as it is (unlink: Vfs.unlinkLost, so that caches, kernels and other nodes follow). Run after
 * the scan that puts files whose moves Redis lost back where it has them. Returns how many files
 * were deleted again.
 */
export async function redoLostDeletions(o: {
  journal: DeletionJournal;
  store: MetadataStore;
  root: LocalDir;
  nodeId: string;
  log: Logger;
  unlink: (parent: number, name: string, only: { ino: number; version: number }) => Promise<void>;
}): Promise<number> {
  const latest = new Map<number, number>();
  for (const e of o.journal.since(Date.now() - LOST_DELETION_WINDOW_MS)) latest.set(e.ino, e.version);
  const inos = [...latest.keys()];
  const paths = createPathCache(o.store);
  let redone = 0;
  for (let i = 0; i < inos.length; i += BATCH) {
    const batch = inos.slice(i, i + BATCH);
    const found = await o.store.recordsAndHolders(batch);
    for (const [k, got] of found.entries()) {
      const ino = batch[k]!;
      if (!got || got.r.nlink === 0 || got.r.version !== latest.get(ino) || got.holders.data.get(o.nodeId) !== got.r.version) continue;
      const path = await paths.pathOf(ino).catch(() => undefined);
      if (path === undefined || o.root.identityOf(path) === fileIdentity(ino, got.r.gen)) continue;
      const only = { ino, version: got.r.version };
      let unlinked = 0;
      for (const { parent, name } of [{ parent: got.r.parent, name: got.r.name }, ...(await o.store.extraNames(ino))]) {
        try {
          await o.unlink(parent, name, only);
          unlinked++;
        } catch (e) {
          // Another file's name now, or this one written since: not a deletion to make again.
          if (errnoOf(e) !== E.ESTALE && errnoOf(e) !== E.ENOENT) throw e;
        }
      }
      if (!unlinked) continue;
      redone++;
      o.log.error({ path, ino, version: got.r.version }, "a file this node deleted (its last name gone, its bytes removed here) was back in Redis, which lost the deletion: deleted again");
    }
  }
  return redone;
}
