/** Replicas: cluster-wide settings (P settings), each node's list of copies to make (P copy:{node}), the repair lease (P repair). */
import type { RedisClient } from "../redis-connect.ts";
import type { CopyOrder, Replication } from "../store.ts";
import type { Keys } from "./keys.ts";
import type { RunScript } from "./scripts.ts";

export function createReplication(client: RedisClient, keys: Keys, run: RunScript): Replication {
  return {
    async setting(name) {
      return (await client.hGet(keys.settings, name)) ?? undefined;
    },
    async setSetting(name, value) {
      await client.hSet(keys.settings, name, value);
    },
    async queueCopy(node, order) {
      await client.rPush(keys.copies(node), JSON.stringify(order));
    },
    async nextCopies(node, max) {
      return (await client.lRange(keys.copies(node), 0, max - 1)).map((s) => JSON.parse(s) as CopyOrder);
    },
    async copyDone(node, order) {
      // The string queueCopy stored: JSON of the same fields in the same order.
      await client.lRem(keys.copies(node), 1, JSON.stringify(order));
    },
    async copyOrders() {
      const out = new Map<string, CopyOrder[]>();
      for await (const key of client.scanIterator({ MATCH: keys.scan.copies, COUNT: 1000 })) {
        const l = await client.lRange(key, 0, -1);
        if (l.length) out.set(keys.nodeOfCopies(key), l.map((x) => JSON.parse(x) as CopyOrder));
      }
      return out;
    },
    async addHolder(ino, node, version) {
      return (await run("addholder", [ino, node, version])) === 1;
    },
    async takeRepairLease(node, ttlMs) {
      // Taken when free, renewed by its holder; another node's lease is left to run out.
      if ((await client.set(keys.repairLease, node, { NX: true, PX: ttlMs })) === "OK") return true;
      if ((await client.get(keys.repairLease)) !== node) return false;
      await client.pExpire(keys.repairLease, ttlMs);
      return true;
    },
  };
}
