import { randomBytes } from "node:crypto";
import { Code } from "@connectrpc/connect";
import type { Logger } from "../util/log.ts";
import { connectRedis, type RedisAccess, type RedisClient } from "../meta/redis-connect.ts";
import { openStore } from "../meta/open-store.ts";
import { parseClusterUrl, withClusterTag } from "../meta/redis-cluster.ts";
import { setDirReplicas } from "../replicas/replica-count.ts";
import { csiError } from "./errors.ts";
import type { VolumeDirs } from "./volume-dirs.ts";
import type { VolumeRecord, VolumeRegistry } from "./volume-registry.ts";

const ROOT = 1;
/** Tags tried for a new volume: enough that one lands on the emptiest primary almost surely. */
const CANDIDATES = 32;
const POLL_MS = 250;
const BATCH = 500;

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
  const urlOf = (tag: string) => withClusterTag(o.url, tag);
  const tagOf = (rec: VolumeRecord) => {
    if (!rec.tag) throw csiError(Code.FailedPrecondition, `volume ${rec.id} has no filesystem of its own: it was made by a driver on a single Redis`);
    return rec.tag;
  };
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

  /** Run fn with a client of the volume's filesystem (on the primary of its slot). */
  async function onVolume<T>(tag: string, fn: (c: RedisClient) => Promise<T>): Promise<T> {
    const c = await connectRedis({ url: urlOf(tag), ...o.access });
    try {
      return await fn(c);
    } finally {
      await c.quit().catch(() => c.disconnect());
    }
  }

  async function keys(c: RedisClient, match: string, each: (batch: string[]) => Promise<void>): Promise<void> {
    let batch: string[] = [];
    for await (const k of c.scanIterator({ MATCH: match, COUNT: 1000 })) {
      batch.push(k);
      if (batch.length >= BATCH) await each(batch.splice(0));
    }
    if (batch.length) await each(batch);
  }

  return {
    async place() {
      const p = await primaries();
      const load = new Map([...p.all].map((n) => [n, 0]));
      for (let after = "", more = true; more; ) {
        const page = await o.registry.list(after, 1000);
        for (const r of page.records) {
          if (!r.tag) continue;
          const n = await p.of(r.tag);
          load.set(n, (load.get(n) ?? 0) + 1);
        }
        after = page.records.at(-1)?.id ?? after;
        more = page.more;
      }
      let best: { tag: string; load: number } | undefined;
      for (let i = 0; i < CANDIDATES; i++) {
        const tag = `${base}-v${randomBytes(6).toString("hex")}`;
        const l = load.get(await p.of(tag)) ?? Infinity;
        if (!best || l < best.load) best = { tag, load: l };
        if (l === Math.min(...load.values())) break;
      }
      return { tag: best!.tag };
    },

    async create(rec, replicas) {
      const store = await openStore({ url: urlOf(tagOf(rec)), access: o.access, nodeId: o.nodeId, waitForAcks: false });
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
     * its keys go only after that, else a last heartbeat would write some back.
     */
    async remove(id, rec) {
      if (!rec) return;
      const tag = tagOf(rec);
      await onVolume(tag, async (c) => {
        const live = async () => {
          const hb: string[] = [];
          await keys(c, `{${tag}}:hb:*`, async (b) => void hb.push(...b));
          return hb.map((k) => k.slice(`{${tag}}:hb:`.length));
        };
        let serving = await live();
        for (const end = Date.now() + o.stopWaitMs; serving.length && Date.now() < end; serving = await live()) await Bun.sleep(POLL_MS);
        if (serving.length) throw csiError(Code.Unavailable, `volume ${id}: nodes ${serving.join(", ")} still serve it; they stop within their check interval, retry`);
        let n = 0;
        await keys(c, `{${tag}}:*`, async (b) => {
          n += b.length;
          await c.unlink(b);
        });
        o.log.info({ volume: id, tag, keys: n }, "volume's filesystem removed from the cluster");
      });
    },

    async close() {
      const c = await admin?.catch(() => undefined);
      await c?.quit().catch(() => c.disconnect());
    },
  };
}
