import * as fs from "node:fs";
import { join } from "node:path";
import { createCopyCache } from "../../src/cache/copy-cache.ts";
import { openLocalDir } from "../../src/local/local-dir.ts";
import { openStore } from "../../src/meta/open-store.ts";
import type { MetadataStore } from "../../src/meta/store.ts";
import type { ShimCreates } from "../../src/fuse/types.ts";
import { createPeerPool } from "../../src/peer/peer-client.ts";
import { createPeerReads } from "../../src/peer/peer-reads.ts";
import { createLogger } from "../../src/util/log.ts";
import { createCopyListing } from "../../src/vfs/copy-listing.ts";
import { createTodoApplier, type TodoApplier } from "../../src/vfs/local-todo.ts";
import { createRwLock } from "../../src/util/rw-lock.ts";
import { createRemoteData, type RemoteData } from "../../src/vfs/remote-data.ts";
import { createVfs, type Vfs } from "../../src/vfs/vfs.ts";
import { tempDir } from "./env.ts";

/**
 * One node's VFS in this process (a cluster node's, or a sole node's), without FUSE or a peer port: a real Redis store, root and
 * cache dirs, and the queue of changes other nodes leave for it, drained only when the test says
 * (as the change feed would). To hold a node between two steps of an operation, a test passes a store
 * wrapper that acts when the operation reaches it.
 */
export interface VfsNode {
  id: string;
  vfs: Vfs;
  /** The store as this node's VFS sees it (wrapped, if the test wrapped it). */
  store: MetadataStore;
  todo: TodoApplier;
  /** Other nodes' bytes for this one (a cluster node's; a sole node's goes unused). */
  remote: RemoteData;
  rootPath: string;
  close(): Promise<void>;
}

/** sole: a sole node's VFS (no peers, metadata written behind); shimCreates: what it hands the shim for creates. */
export interface VfsNodeOptions {
  sole?: boolean;
  shimCreates?: ShimCreates;
  /** What the daemon does when a file this node holds has no record (VfsOptions.recordLost). */
  recordLost?: (ino: number) => Promise<void>;
}

export async function startVfsNode(url: string, id: string, wrap: (s: MetadataStore) => MetadataStore = (s) => s, o: VfsNodeOptions = {}): Promise<VfsNode> {
  const dir = tempDir(`vfs-${id}`);
  const rootPath = join(dir.path, "root");
  fs.mkdirSync(rootPath);
  fs.mkdirSync(join(dir.path, "cache"));
  const log = createLogger({ name: id }).child({ node: id });
  log.level = "warn";
  const raw = await openStore({ url, nodeId: id, waitForAcks: false });
  const store = wrap(raw);
  await store.init(0o755, 0, 0);
  const startedAt = Date.now();
  await store.registerNode({ id, address: "127.0.0.1:1", startedAt }, 60_000);
  const root = openLocalDir(rootPath);
  const cacheDir = openLocalDir(join(dir.path, "cache"));
  const listing = createCopyListing({ store, nodeId: id, startedAt, log });
  const cache = createCopyCache({ dir: cacheDir, ramBytes: 1 << 24, ramMaxFileBytes: 1 << 20, ramMaxFiles: 100, diskBytes: 1 << 24, onEvict: (ino, version) => listing.evicted(ino, version) });
  const pool = createPeerPool({ timeoutMs: 5_000 });
  const remote = createRemoteData({ root, store, peers: createPeerReads(pool), cache, nodeId: id, listing, log });
  let vfs: Vfs | undefined;
  const localDirs = createRwLock();
  const todo = createTodoApplier({ root, nodeId: id, store, log, writing: (ino) => vfs?.writing(ino) ?? false, localDirs, asked: () => vfs?.store ?? store });
  const made = (vfs = createVfs({ root, nodeId: id, store, log, attrCacheMs: 1000, localDirs, ...(o.sole ? {} : { remote, catchUp: () => todo.drain() }), ...(o.shimCreates ? { shimCreates: o.shimCreates } : {}), ...(o.recordLost ? { recordLost: o.recordLost } : {}) }));
  return {
    id, vfs: made, store, todo, remote, rootPath,
    async close() {
      await made.closeAll();
      await pool.close();
      cache.close();
      await raw.unregisterNode(id);
      await raw.close();
      cacheDir.close();
      root.close();
      dir.remove();
    },
  };
}
