/**
 * MetadataStore on Redis, composed of one module per job: the key map (keys.ts, documented there as
 * a table), the record codec, the Lua scripts (one .lua file each, run by scripts.ts), the namespace,
 * inode numbers, xattrs, placement, the change feed, membership and the admin scans.
 * Errors from scripts are errno names ("ENOENT ..."), thrown as FsError.
 */
import { connectRedis, type RedisAccess } from "../redis-connect.ts";
import type { SlowNodesEvent } from "../change-outbox.ts";
import type { MetadataStore } from "../store.ts";
import { createAdminScans } from "./admin-scans.ts";
import { createChangeFeed } from "./change-feed.ts";
import { createInodeNumbers } from "./inode-numbers.ts";
import { createKeys } from "./keys.ts";
import { createMembership } from "./membership.ts";
import { createNamespace } from "./namespace.ts";
import { createPlacement } from "./placement.ts";
import { createReplication } from "./replication.ts";
import { createScriptRunner, type MakeRoom, type ReplicaAck } from "./scripts.ts";
import { isSentinelUrl, parseSentinelUrl } from "../redis-sentinel.ts";
import { clusterPrefix, isClusterUrl, parseClusterUrl } from "../redis-cluster.ts";
import { createXattrs } from "./xattrs.ts";

export interface RedisStoreOptions {
  url: string;
  /** CA and password for the URL, when given apart from it. */
  access?: RedisAccess;
  /** This node: the origin of the changes it publishes. */
  nodeId: string;
  prefix?: string;
  /**
   * Wait for the other nodes to acknowledge renames and removals (default). Off for a client whose
   * callers need no such guarantee (the CSI controller removing a whole volume). Either way a new
   * name or version waits for the nodes watching it (ChangeOutbox.publish).
   */
  waitForAcks?: boolean;
  /**
   * No other node can reach this Redis (the daemon's private one): what this client changes is told to
   * no one, sparing a PUBLISH per change.
   */
  alone?: boolean;
  /**
   * Redis refused a change for want of disk space: free some (the room a daemon keeps beside its
   * private Redis) and say whether any was freed. The change is then made once Redis appends again.
   */
  makeRoom?: MakeRoom;
  /** Called when the connection drops or comes back (for logs). */
  onConnectionEvent?: (event: "error" | "ready", detail?: string) => void;
  /** Nodes that let an acknowledgement wait run out (no longer waited for) or answered again (for logs). */
  onSlowNodes?: (event: SlowNodesEvent, nodes: string[]) => void;
}

/** The URL's wait_replicas/wait_ms (redis+sentinel:// and redis+cluster:// only). */
function replicaAck(url: string): ReplicaAck | undefined {
  const u = isSentinelUrl(url) ? parseSentinelUrl(url) : isClusterUrl(url) ? parseClusterUrl(url) : undefined;
  if (!u) return undefined;
  return u.waitReplicas > 0 ? { replicas: u.waitReplicas, timeoutMs: u.waitMs } : undefined;
}

export async function createRedisStore(opts: RedisStoreOptions): Promise<MetadataStore> {
  // A single Redis keeps the prefix it always had (existing data); on a cluster the URL's tag makes
  // every key hash to one slot.
  const prefix = opts.prefix ?? (isClusterUrl(opts.url) ? clusterPrefix(opts.url) : "mcfs:");
  // A lone Redis down: operations fail at once (EIO) instead of hanging the mount. Through sentinels
  // they wait (bounded) for the next master.
  const client = await connectRedis({ url: opts.url, ...opts.access }, opts.onConnectionEvent);
  const run = await createScriptRunner(client, prefix, { ack: replicaAck(opts.url), makeRoom: opts.makeRoom });
  const keys = createKeys(prefix);
  const membership = createMembership(client, keys);
  const feed = createChangeFeed(client, keys, { nodeId: opts.nodeId, waitForAcks: opts.waitForAcks, alone: opts.alone, onSlowNodes: opts.onSlowNodes, nodes: membership.nodes });
  const numbers = createInodeNumbers(client, keys, run);
  return {
    ...createNamespace({ client, keys, run, nodeId: opts.nodeId, numbers, feed }),
    // Named one by one: the parts' own hooks (created, publish) are not the store's.
    reserveInodes: numbers.reserveInodes,
    inodeCounter: numbers.inodeCounter,
    instanceId: numbers.instanceId,
    raiseInodeCounter: numbers.raiseInodeCounter,
    ...createXattrs(client, keys, run, feed),
    ...createPlacement(client, keys, run, opts.nodeId),
    ...createReplication(client, keys, run),
    subscribe: feed.subscribe,
    takeTodo: feed.takeTodo,
    todoWaiting: feed.todoWaiting,
    watchesHold: feed.watchesHold,
    onWatchesHold: feed.onWatchesHold,
    ...membership,
    ...createAdminScans({ client, keys, run, membership, feed }),
    async close() {
      await feed.close();
      if (!client.isOpen) return;
      // QUIT waits for Redis; when it is unreachable, drop the socket instead.
      if (!client.isReady) return void (await client.disconnect().catch(() => {}));
      await Promise.race([client.quit(), Bun.sleep(2000).then(() => client.disconnect())]).catch(() => client.disconnect().catch(() => {}));
    },
  };
}
