import { Code } from "@connectrpc/connect";
import type { Logger } from "../util/log.ts";
import { connectRedis, type RedisAccess, type RedisClient } from "../meta/redis-connect.ts";
import { openStore } from "../meta/open-store.ts";
import { parseClusterUrl, withClusterTag } from "../meta/redis-cluster.ts";
import { setDirReplicas } from "../replicas/replica-count.ts";
import { csiError } from "./errors.ts";
import type { VolumeDirs } from "./volume-dirs.ts";
import { allVolumes, type VolumeRecord, type VolumeRegistry } from "./volume-registry.ts";
import { dropFilesystem, isVolumeTag, newVolumeTag, onFilesystem, servingNodes } from "./volume-tags.ts";

const ROOT = 1;
/** Tags tried for a new volume: enough that one lands on the emptiest primary almost surely. */
const CANDIDATES = 32;
const POLL_MS = 250;

export interface ClusterVolumeDirsOptions {
  /** The driver's redis+cluster:// URL: its tag holds the registry, each volume gets a tag of its own. */
  url: string;
  access: RedisAccess;
  registry: VolumeRegistry;
  /** Origin of the controller's changes in each volume's filesystem. */
  nodeId: string;
  /** How long DeleteVolume waits for the nodes to stop serving the volume before it answers Unavailable. */
  stopWaitMs: number;
  log: Logger;
}

/**
 * Volumes on a Redis Cluster: each a filesystem of its own under its own hash tag, so volumes spread
 * over the cluster's primaries (a new one goes to the primary holding the fewest) and a rename
 * between two is EXDEV as between any two filesystems. Nodes serve each with a daemon of its own.
 */
export function createClusterVolumeDirs(o: ClusterVolumeDirsOptions): VolumeDirs & { close(): Promise<void> } {
  const base = parseClusterUrl(o.url).tag;
  /**
   * The record's tag if it is one this driver made and no other record names (two can only by an
   * edit of Redis): else undefined, and nothing is made or removed under it.
   */
  async function tagOf(rec: VolumeRecord): Promise<string | undefined> {
    const tag = rec.tag;
    if (!tag || !isVolumeTag(base, tag)) return undefined;
    return (await allVolumes(o.registry)).some((r) => r.id !== rec.id && r.tag === tag) ? undefined : tag;
  }
  let admin: Promise<RedisClient> | undefined;
  const client = () => (admin ??= connectRedis({ url: o.url, ...o.access }));

  /** Node id of the primary serving each slot, and of the slot of each tag. */
  async function primaries(): Promise<{ of(tag: string): Promise<string>; all: Set<string> }> {
    const c = await client();
    const ranges = (await c.sendCommand(["CLUSTER", "SLOTS"])) as [number, number, [string, number, string, ...unknown[]], ...unknown[]][];
    const of = async (tag: string) => {
      const slot = Number(await c.sendCommand(["CLUSTER", "KEYSLOT", `{${tag}}`]));
      return ranges.find(([s, e]) => s <= slot && slot <= e)?.[2][2] ?? "";
    };
    return { of, all: new Set(ranges.map((r) => r[2][2])) };
  }

  return {
    async place() {
      const p = await primaries();
      const load = new Map([...p.all].map((n) => [n, 0]));
      for (const r of await allVolumes(o.registry)) {
        if (!r.tag) continue;
        const n = await p.of(r.tag);
        load.set(n, (load.get(n) ?? 0) + 1);
      }
      const least = Math.min(...load.values());
      let best: { tag: string; load: number } | undefined;
      for (let i = 0; i < CANDIDATES && best?.load !== least; i++) {
        const tag = newVolumeTag(base);
        const l = load.get(await p.of(tag)) ?? Infinity;
        if (!best || l < best.load) best = { tag, load: l };
      }
      return { tag: best!.tag };
    },

    async create(rec, replicas) {
      const tag = await tagOf(rec);
      if (!tag) throw csiError(Code.FailedPrecondition, `volume ${rec.id} has no filesystem tag of its own this driver made (${JSON.stringify(rec.tag ?? "")}): delete it and create it again`);
      const store = await openStore({ url: withClusterTag(o.url, tag), access: o.access, nodeId: o.nodeId, waitForAcks: false });
      try {
        // World-writable like an NFS export: pods run as any user; each pod sees only its own volume.
        await store.init(0o777, 0, 0);
        if (replicas !== undefined) await setDirReplicas(store, ROOT, replicas);
      } finally {
        await store.close();
      }
    },

    /**
     * The nodes stop their daemons of the volume once it is marked (they look every check interval);
     * its keys go only after that, else a last heartbeat would write some back. A node whose daemon
     * wrote after all (one starting as the volume was deleted) removes the keys again once it has
     * stopped it (volume-daemons.ts).
     */
    async remove(id, rec) {
      const tag = rec && (await tagOf(rec));
      if (!tag) {
        if (rec) o.log.warn({ volume: id, tag: rec.tag }, "the volume's record names no filesystem of its own this driver made: only the record is removed");
        return;
      }
      await onFilesystem(o.url, o.access, tag, async (c) => {
        let serving = await servingNodes(c, tag);
        for (const end = Date.now() + o.stopWaitMs; serving.length && Date.now() < end; serving = await servingNodes(c, tag)) await Bun.sleep(POLL_MS);
        if (serving.length) throw csiError(Code.Unavailable, `volume ${id}: nodes ${serving.join(", ")} still serve it; they stop within their check interval, retry`);
        o.log.info({ volume: id, tag, keys: await dropFilesystem(c, tag) }, "volume's filesystem removed from the cluster");
      });
    },

    async close() {
      const c = await admin?.catch(() => undefined);
      await c?.quit().catch(() => c.disconnect());
    },
  };
}
