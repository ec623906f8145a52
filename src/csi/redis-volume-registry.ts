/**
 * VolumeRegistry on Redis (the filesystem's Redis; its own prefix, under the filesystem's hash tag on
 * a Redis Cluster).
 *
 * | key              | type | holds                                                          |
 * |------------------|------|----------------------------------------------------------------|
 * | csi:vol:{id}     | hash | name, capacity (bytes), created (ms since epoch); on a Redis   |
 * |                  |      | Cluster tag (the volume's own filesystem); deleting: "1" once  |
 * |                  |      | DeleteVolume has begun                                         |
 * | csi:vols         | zset | every volume id, score 0: ListVolumes pages through it by id   |
 * | csi:pub:{id}     | hash | node id -> JSON {readonly, mode}: where the volume is published |
 * | csi:nodes        | hash | node id -> JSON {free, total, at}: node plugins that reported  |
 * | csi:gone         | hash | tag -> ms since epoch: filesystems of deleted volumes          |
 */
import type { RedisClient } from "../meta/redis-connect.ts";
import type { NodeReport, Publication, VolumeRecord, VolumeRegistry } from "./volume-registry.ts";

const PING_TIMEOUT_MS = 2000;

const CREATE = `
local k = KEYS[1]
if redis.call('EXISTS', k) == 1 then return redis.call('HGETALL', k) end
redis.call('HSET', k, 'name', ARGV[2], 'capacity', ARGV[3], 'created', ARGV[4])
if ARGV[5] ~= '' then redis.call('HSET', k, 'tag', ARGV[5]) end
redis.call('ZADD', KEYS[2], 0, ARGV[1])
return {}`;

/** Every capacity stored must be one a later call can answer with (an exact, non-negative integer). */
function storable(bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new Error(`capacity ${bytes} cannot be recorded (0 to ${Number.MAX_SAFE_INTEGER} bytes)`);
  return String(bytes);
}

function record(id: string, h: Record<string, string>): VolumeRecord | undefined {
  if (h.name === undefined) return undefined;
  return { id, name: h.name, capacity: Number(h.capacity ?? 0), createdAt: Number(h.created ?? 0), ...(h.tag ? { tag: h.tag } : {}), ...(h.deleting ? { deleting: true } : {}) };
}

const REMOVE = `
local tag = redis.call('HGET', KEYS[1], 'tag')
if tag then redis.call('HSET', KEYS[4], tag, ARGV[2]) end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('ZREM', KEYS[3], ARGV[1])
return 0`;

/** A field of a volume that is there: a key holding it alone would block creating the name again. */
const SET_FIELD = `if redis.call('EXISTS', KEYS[1]) == 1 then redis.call('HSET', KEYS[1], ARGV[1], ARGV[2]) end return 0`;

/** prefix: the filesystem's key prefix ("{tag}:" on a Redis Cluster); the registry's keys go under it. */
export function createRedisVolumeRegistry(client: RedisClient, prefix = ""): VolumeRegistry {
  const P = `${prefix}csi:`;
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
      const r = (await client.eval(CREATE, { keys: [`${P}vol:${rec.id}`, `${P}vols`], arguments: [rec.id, rec.name, storable(rec.capacity), String(rec.createdAt), rec.tag ?? ""] })) as string[];
      if (!r.length) return { record: rec, created: true };
      const h: Record<string, string> = {};
      for (let i = 0; i + 1 < r.length; i += 2) h[r[i]!] = r[i + 1]!;
      return { record: record(rec.id, h)!, created: false };
    },
    async markDeleting(id) {
      await client.eval(SET_FIELD, { keys: [`${P}vol:${id}`], arguments: ["deleting", "1"] });
    },
    async remove(id) {
      await client.eval(REMOVE, { keys: [`${P}vol:${id}`, `${P}pub:${id}`, `${P}vols`, `${P}gone`], arguments: [id, String(Date.now())] });
    },
    async deletedTags() {
      return new Set(await client.hKeys(`${P}gone`));
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
      await client.eval(SET_FIELD, { keys: [`${P}vol:${id}`], arguments: ["capacity", storable(bytes)] });
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
