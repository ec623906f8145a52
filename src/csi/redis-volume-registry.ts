/**
 * VolumeRegistry on Redis (the filesystem's Redis; its own prefix).
 *
 * | key              | type | holds                                                          |
 * |------------------|------|----------------------------------------------------------------|
 * | csi:vol:{id}     | hash | name, capacity (bytes), created (ms since epoch)               |
 * | csi:vols         | zset | every volume id, score 0: ListVolumes pages through it by id   |
 * | csi:pub:{id}     | hash | node id -> JSON {readonly, mode}: where the volume is published |
 * | csi:nodes        | hash | node id -> JSON {free, total, at}: node plugins that reported  |
 */
import type { RedisClient } from "../meta/redis-connect.ts";
import type { NodeReport, Publication, VolumeRecord, VolumeRegistry } from "./volume-registry.ts";

const P = "csi:";
const PING_TIMEOUT_MS = 2000;

const CREATE = `
local k = KEYS[1]
if redis.call('EXISTS', k) == 1 then return redis.call('HGETALL', k) end
redis.call('HSET', k, 'name', ARGV[2], 'capacity', ARGV[3], 'created', ARGV[4])
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return {}`;

/** Every capacity stored must be one a later call can answer with (an exact, non-negative integer). */
function storable(bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new Error(`capacity ${bytes} cannot be recorded (0 to ${Number.MAX_SAFE_INTEGER} bytes)`);
  return String(bytes);
}

function record(id: string, h: Record<string, string>): VolumeRecord | undefined {
  if (h.name === undefined) return undefined;
  return { id, name: h.name, capacity: Number(h.capacity ?? 0), createdAt: Number(h.created ?? 0) };
}

const SET_CAPACITY = `if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], 'capacity', ARGV[1]) end return 0`;

export function createRedisVolumeRegistry(client: RedisClient): VolumeRegistry {
  return {
    async ping() {
      // A Redis that hangs is as down as one that refuses: Probe must answer, and say not ready.
      const timeout = new Promise<string>((res) => setTimeout(() => res("timeout"), PING_TIMEOUT_MS).unref());
      try {
        return (await Promise.race([client.ping(), timeout])) === "PONG";
      } catch {
        return false;
      }
    },
    async get(id) {
      return record(id, await client.hGetAll(`${P}vol:${id}`));
    },
    async create(rec) {
      const r = (await client.eval(CREATE, { keys: [`${P}vol:${rec.id}`, `${P}vols`], arguments: [rec.id, rec.name, storable(rec.capacity), String(rec.createdAt)] })) as string[];
      if (!r.length) return { record: rec, created: true };
      const h: Record<string, string> = {};
      for (let i = 0; i + 1 < r.length; i += 2) h[r[i]!] = r[i + 1]!;
      return { record: record(rec.id, h)!, created: false };
    },
    async remove(id) {
      await client.multi().del(`${P}vol:${id}`).del(`${P}pub:${id}`).zRem(`${P}vols`, id).exec();
    },
    async list(after, max) {
      const ids = await client.zRangeByLex(`${P}vols`, after ? `(${after}` : "-", "+", { LIMIT: { offset: 0, count: max + 1 } });
      const page = ids.slice(0, max);
      const recs = await Promise.all(page.map((id) => client.hGetAll(`${P}vol:${id}`)));
      return { records: page.map((id, i) => record(id, recs[i]!)).filter((r): r is VolumeRecord => r !== undefined), more: ids.length > max };
    },
    async publications(id) {
      const h = await client.hGetAll(`${P}pub:${id}`);
      return new Map(Object.entries(h).map(([node, v]) => [node, JSON.parse(v) as Publication]));
    },
    async publish(id, node, p) {
      await client.hSet(`${P}pub:${id}`, node, JSON.stringify(p));
    },
    async unpublish(id, node) {
      if (node === undefined) await client.del(`${P}pub:${id}`);
      else await client.hDel(`${P}pub:${id}`, node);
    },
    async setCapacity(id, bytes) {
      // Only on a volume that is there: a key holding capacity alone would block creating the name again.
      await client.eval(SET_CAPACITY, { keys: [`${P}vol:${id}`], arguments: [storable(bytes)] });
    },
    async reportNode(node, r) {
      await client.hSet(`${P}nodes`, node, JSON.stringify(r));
    },
    async nodes() {
      const h = await client.hGetAll(`${P}nodes`);
      return new Map(Object.entries(h).map(([node, v]) => [node, JSON.parse(v) as NodeReport]));
    },
    async close() {
      await client.quit().catch(() => client.disconnect());
    },
  };
}
