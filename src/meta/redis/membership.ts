/** The nodes of the cluster: P nodes (every node that ever joined), P hb:{node} (live), P seen (last report). */
import type { RedisClient } from "../redis-connect.ts";
import type { Membership, NodeInfo, NodeReport, NodeState } from "../store.ts";
import type { Keys } from "./keys.ts";

export function createMembership(client: RedisClient, keys: Keys): Membership {
  return {
    async nodes() {
      const [all, seen] = await Promise.all([client.hGetAll(keys.nodes), client.hGetAll(keys.seen)]);
      const ids = Object.keys(all);
      const alive = await Promise.all(ids.map((id) => client.exists(keys.heartbeat(id))));
      return new Map(
        ids.map((id, i) => {
          const s = seen[id] ? (JSON.parse(seen[id]) as { at: number } & NodeReport) : undefined;
          return [id, { ...(JSON.parse(all[id]!) as NodeInfo), alive: alive[i] === 1, lastSeen: s?.at, report: s && { cache: s.cache ?? [], ...(s.free !== undefined ? { free: s.free } : {}) } } satisfies NodeState];
        }),
      );
    },
    async registerNode(node, ttlMs) {
      const [prevNode, prevSeen] = await Promise.all([client.hGet(keys.nodes, node.id), client.hGet(keys.seen, node.id)]);
      await client.hSet(keys.nodes, node.id, JSON.stringify(node));
      await client.set(keys.heartbeat(node.id), String(Date.now()), { PX: ttlMs });
      await client.hSet(keys.seen, node.id, JSON.stringify({ at: Date.now(), cache: [] }));
      return { node: prevNode ?? undefined, seen: prevSeen ?? undefined };
    },
    async withdrawNode(nodeId, previous) {
      const tx = client.multi().del(keys.heartbeat(nodeId));
      if (previous.node === undefined) tx.hDel(keys.nodes, nodeId);
      else tx.hSet(keys.nodes, nodeId, previous.node);
      if (previous.seen === undefined) tx.hDel(keys.seen, nodeId);
      else tx.hSet(keys.seen, nodeId, previous.seen);
      await tx.exec();
    },
    async heartbeat(nodeId, ttlMs, report) {
      const now = Date.now();
      try {
        await client.multi().set(keys.heartbeat(nodeId), String(now), { PX: ttlMs }).hSet(keys.seen, nodeId, JSON.stringify({ at: now, cache: report?.cache ?? [], ...(report?.free !== undefined ? { free: report.free } : {}) })).exec();
      } catch (e) {
        // A full Redis (noeviction) refuses SET and HSET, not PEXPIRE: the node stays alive for the
        // others (its report waits for room), or they would take it for gone while it serves.
        if (!String((e as Error).message).includes("EXECABORT") || !(await client.pExpire(keys.heartbeat(nodeId), ttlMs))) throw e;
      }
    },
    async unregisterNode(nodeId) {
      // Only the heartbeat goes: the node stays known, so changes to its files are queued while it is away.
      await client.del(keys.heartbeat(nodeId));
    },
  };
}
