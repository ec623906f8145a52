/**
 * VolumeRegistry in memory, for in-process tests of the controller. It mirrors
 * redis-volume-registry.ts (ids in byte order as ZRANGEBYLEX gives them, records stored as strings so
 * a capacity comes back as Redis would give it) and passes the same contract suite
 * (test/contract/volume-registry-contract.ts). Never a stand-in for Redis in filesystem tests.
 */
import type { NodeReport, Publication, VolumeRecord, VolumeRegistry } from "./volume-registry.ts";

/** As in redis-volume-registry.ts: every capacity stored must be one a later call can answer with. */
function storable(bytes: number): string {
  if (!Number.isSafeInteger(bytes) || bytes < 0) throw new Error(`capacity ${bytes} cannot be recorded (0 to ${Number.MAX_SAFE_INTEGER} bytes)`);
  return String(bytes);
}

const byBytes = (a: string, b: string) => Buffer.compare(Buffer.from(a), Buffer.from(b));

export function createMemoryVolumeRegistry(): VolumeRegistry {
  const vols = new Map<string, { name: string; capacity: string; created: string; tag?: string; deleting?: true }>();
  const pubs = new Map<string, Map<string, string>>();
  const nodes = new Map<string, string>();
  const gone = new Set<string>();
  const record = (id: string): VolumeRecord | undefined => {
    const v = vols.get(id);
    return v && { id, name: v.name, capacity: Number(v.capacity), createdAt: Number(v.created), ...(v.tag ? { tag: v.tag } : {}), ...(v.deleting ? { deleting: true } : {}) };
  };
  return {
    ping: async () => true,
    get: async (id) => record(id),
    async create(rec) {
      const had = record(rec.id);
      if (had) return { record: had, created: false };
      vols.set(rec.id, { name: rec.name, capacity: storable(rec.capacity), created: String(rec.createdAt), ...(rec.tag ? { tag: rec.tag } : {}) });
      return { record: rec, created: true };
    },
    async markDeleting(id) {
      const v = vols.get(id);
      if (v) v.deleting = true;
    },
    async remove(id) {
      const tag = vols.get(id)?.tag;
      if (tag) gone.add(tag);
      vols.delete(id);
      pubs.delete(id);
    },
    deletedTags: async () => new Set(gone),
    async list(after, max) {
      const ids = [...vols.keys()].sort(byBytes).filter((id) => !after || byBytes(id, after) > 0);
      return { records: ids.slice(0, max).map((id) => record(id)!), more: ids.length > max };
    },
    async publications(id) {
      return new Map([...(pubs.get(id) ?? [])].map(([node, v]) => [node, JSON.parse(v) as Publication]));
    },
    async publish(id, node, p) {
      let m = pubs.get(id);
      if (!m) pubs.set(id, (m = new Map()));
      m.set(node, JSON.stringify(p));
    },
    async unpublish(id, node) {
      if (node === undefined) pubs.delete(id);
      else pubs.get(id)?.delete(node);
    },
    async setCapacity(id, bytes) {
      const v = vols.get(id);
      const capacity = storable(bytes);
      // HSET on a volume that is gone would leave a record without a name, which get() ignores.
      if (v) v.capacity = capacity;
    },
    async reportNode(node, r) {
      nodes.set(node, JSON.stringify(r));
    },
    async nodes() {
      return new Map([...nodes].map(([node, v]) => [node, JSON.parse(v) as NodeReport]));
    },
    async close() {},
  };
}
