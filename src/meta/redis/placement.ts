/** Who holds a file's bytes (P loc:{ino} root paths, P cc:{ino} caches) and who may write them now (P w:{ino}). */
import type { RedisClient } from "../redis-connect.ts";
import type { Placement } from "../store.ts";
import type { Keys } from "./keys.ts";
import { pairs, parseHolders, parseScriptRecord, scriptRecord } from "./record-codec.ts";
import type { RunScript } from "./scripts.ts";

/** What an open's script answered of its watch: asked for and not noted (Redis out of memory). */
const unwatchedIf = (asked: boolean, watching: number) => (asked && !watching ? { unwatched: true as const } : {});

export function createPlacement(client: RedisClient, keys: Keys, run: RunScript, nodeId: string): Placement {
  return {
    async takeWriteLease(ino, node, ttlMs) {
      return (await run("takelease", [ino, node, ttlMs])) === 1;
    },
    async releaseWriteLease(ino, node) {
      await run("droplease", [ino, node]);
    },
    async locations(ino) {
      const h = await client.hGetAll(keys.locations(ino));
      return new Map(Object.entries(h).map(([k, v]) => [k, Number(v)]));
    },
    async holders(ino) {
      const [data, cached] = (await client.multi().hGetAll(keys.locations(ino)).hGetAll(keys.cached(ino)).exec()) as unknown as [Record<string, string>, Record<string, string>];
      return parseHolders(data, cached);
    },
    async recordAndHolders(ino, watch = false) {
      const [rec, loc, cc, watching] = (await run("opening", [ino, watch ? nodeId : ""])) as [string[], string[], string[], number];
      return { r: parseScriptRecord(rec), holders: parseHolders(pairs(loc), pairs(cc)), ...unwatchedIf(watch, watching) };
    },
    async recordsAndHolders(inos, watch = false) {
      if (!inos.length) return [];
      const all = (await run("holdings", [watch ? nodeId : "", ...inos])) as [string[], string[], string[], number][];
      return all.map(([rec, loc, cc, watching]) => {
        const r = scriptRecord(rec);
        return r && { r, holders: parseHolders(pairs(loc), pairs(cc)), ...unwatchedIf(watch, watching) };
      });
    },
    async heldBy(node, copies) {
      if (!copies.length) return [];
      const r = (await run("heldby", [node, ...copies.flatMap((c) => [String(c.ino), String(c.version)])])) as number[];
      return r.map((x) => x === 1);
    },
    async addCachedCopies(node, startedAt, copies) {
      return (await run("addcached", [node, String(startedAt), ...copies.flatMap((c) => [String(c.ino), String(c.version)])])) as number;
    },
    async dropCachedCopy(ino, node, version) {
      await run("dropcached", [String(ino), node, String(version)]);
    },
  };
}
