/**
 * A node's part in keeping replicas: it asks for copies of what it publishes, makes the copies asked
 * of it, and, while it holds the repair lease, looks for files with too few copies every so often.
 */
import type { LocalDir } from "../local/local-dir.ts";
import type { Caller } from "../fuse/types.ts";
import type { Inode, MetadataStore } from "../meta/store.ts";
import type { Metrics } from "../metrics/metrics.ts";
import { checkReplicas, copyBacklog } from "../replicas/repair.ts";
import { checkDirReplicas, createReplicaCount, markReplicaDir, REPLICAS_XATTR } from "../replicas/replica-count.ts";
import { createReplicator } from "../replicas/replicator.ts";
import type { Logger } from "../util/log.ts";
import { createPathCache } from "../vfs/paths.ts";
import { makeLocal } from "../vfs/local-files.ts";
import type { RemoteData } from "../vfs/remote-data.ts";

export interface NodeReplicas {
  published(r: Inode, path: string): void;
  /** A directory's replica count is about to be set by c: checked (see checkDirReplicas), and the cluster marked as using replicas. */
  xattrSetting(c: Caller, ino: number, name: string, value: Uint8Array): Promise<void>;
  close(): Promise<void>;
}

export interface NodeReplicasOptions {
  store: MetadataStore;
  nodeId: string;
  root: LocalDir;
  log: Logger;
  remote: RemoteData;
  graceMs: number;
  checkMs: number;
  writing(ino: number): boolean;
  /** One more local name for the bytes at from (hard links). */
  linkLocal(from: string, to: string): void;
  metrics?: Metrics | undefined;
}

export function startNodeReplicas(o: NodeReplicasOptions): NodeReplicas {
  const { store, nodeId, log, metrics: m } = o;
  const count = createReplicaCount(store);
  const replicator = createReplicator({
    store, nodeId, root: o.root, log, count,
    fetchTo: (ino, version, path, size, owner, into) => o.remote.fetchTo(ino, version, path, size, owner, { into }),
    // No cache kept: other nodes' renames are not heard here.
    pathOf: (ino) => createPathCache(store).pathOf(ino),
    childPath: (parent, name) => createPathCache(store).childPath(parent, name),
    linkLocal: o.linkLocal,
    moveLocal: (from, to) => makeLocal(o.root, to, () => o.root.rename(from, to)),
    writing: o.writing,
    copied: (bytes) => {
      m?.replicaCopies.inc();
      m?.replicaBytes.inc(bytes);
    },
  });
  let looking = false;
  const look = setInterval(() => {
    if (looking) return;
    looking = true;
    void (async () => {
      if (!(await count.inUse()) || !(await store.takeRepairLease(nodeId, 3 * o.checkMs))) return;
      const rep = await checkReplicas({ store, count, graceMs: o.graceMs, queue: true });
      const backlog = await copyBacklog(store);
      m?.underReplicated.set(rep.under.files);
      m?.replicaBacklog.set(backlog);
      if (rep.queued || rep.unavailable) log.info({ files: rep.files, under: rep.under.files, asked: rep.queued, unavailable: rep.unavailable, backlog }, "files with too few copies: replicas asked for");
    })()
      .catch((e: unknown) => log.warn({ err: (e as Error).message }, "looking for files with too few copies failed"))
      .finally(() => (looking = false));
  }, o.checkMs);
  return {
    published: (r, path) => replicator.published(r, path),
    async xattrSetting(c, _ino, name, value) {
      if (name !== REPLICAS_XATTR) return;
      await markReplicaDir(store, await checkDirReplicas(c.uid, value, () => count.clusterWide()));
    },
    async close() {
      clearInterval(look);
      await replicator.close();
    },
  };
}
