import { createHash } from "node:crypto";
import { Code } from "@connectrpc/connect";
import type { ServiceImpl } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { Controller, ControllerServiceCapability_RPC_Type as Cap, type CapacityRange, type VolumeSchema } from "../gen/csi/v1/csi_pb.ts";
import type { Logger } from "../util/log.ts";
import { csiError, createOpLocks, guard, invalid } from "./errors.ts";
import { READ_ONLY, SINGLE_NODE, requireCapabilities, requireServable, unsupported } from "./capabilities.ts";
import type { VolumeRecord, VolumeRegistry } from "./volume-registry.ts";
import { isVolumeId, type VolumeDirs } from "./volume-dirs.ts";
import { MAX_REPLICAS, parseReplicas } from "../replicas/replica-count.ts";

/** A directory name for a volume: the CO's name when it is a safe one (pvc-<uid>), else a digest of it. */
export function volumeIdFor(name: string): string {
  return isVolumeId(name) ? name : `v-${createHash("sha256").update(name).digest("hex").slice(0, 40)}`;
}

const TOKEN = "mcfs1:";

/**
 * Longest volume name accepted: Kubernetes names the volume after its PV, and a PV name is a DNS
 * subdomain of at most 253 characters, so every name Kubernetes can send fits and nothing much longer
 * (names are stored in Redis and logged) is taken.
 */
export const MAX_NAME_BYTES = 253;

/** Largest capacity recorded: capacities are kept as exact JS numbers (2^53 - 1 bytes, 8 PiB). */
const MAX_CAPACITY = BigInt(Number.MAX_SAFE_INTEGER);

/** Sizes asked for: at least required, at most limit (0: not set). */
/** The StorageClass parameter `replicas`: copies of each file of the volume (undefined: the cluster's setting). */
function replicasParameter(p: Record<string, string>): number | undefined {
  const v = p.replicas;
  if (v === undefined) return undefined;
  const n = parseReplicas(v);
  if (n === undefined) throw invalid("parameters", `replicas must be an integer 1..${MAX_REPLICAS}, got ${JSON.stringify(v)}`);
  return n;
}

function range(r: CapacityRange | undefined): { required: number; limit: number } {
  const req = r?.requiredBytes ?? 0n, lim = r?.limitBytes ?? 0n;
  if (req < 0n) throw invalid("capacity_range.required_bytes", "must not be negative");
  if (lim < 0n) throw invalid("capacity_range.limit_bytes", "must not be negative");
  for (const [field, v] of [["required_bytes", req], ["limit_bytes", lim]] as const)
    if (v > MAX_CAPACITY) throw csiError(Code.OutOfRange, `capacity_range.${field} ${v} is above the largest capacity this plugin records (${MAX_CAPACITY} bytes)`);
  const required = Number(req), limit = Number(lim);
  if (limit && required > limit) throw invalid("capacity_range", "has required_bytes above limit_bytes");
  return { required, limit };
}

const fits = (cap: number, r: { required: number; limit: number }) => (!r.required || cap >= r.required) && (!r.limit || cap <= r.limit);

export interface ControllerOptions {
  registry: VolumeRegistry;
  dirs: VolumeDirs;
  log: Logger;
}

/**
 * The controller: each volume is a directory /volumes/<id> of the filesystem, or on a Redis Cluster a
 * filesystem of its own (volume-dirs.ts), recorded in Redis.
 * Capacity is recorded (and grows with expansion) but not enforced as a quota.
 */
export function createControllerService(o: ControllerOptions): Partial<ServiceImpl<typeof Controller>> {
  const { registry, dirs } = o;
  const locks = createOpLocks();
  const g = <Req, Res>(m: string, fn: (r: Req) => Promise<Res>) => guard(o.log, m, fn);

  const volumeOf = (r: VolumeRecord): MessageInitShape<typeof VolumeSchema> => ({ volumeId: r.id, capacityBytes: BigInt(r.capacity) });
  async function known(id: string): Promise<VolumeRecord> {
    const r = await registry.get(id);
    if (!r) throw csiError(Code.NotFound, `volume ${id} does not exist`);
    return r;
  }

  return {
    createVolume: g("CreateVolume", async (req) => {
      if (!req.name) throw invalid("name");
      const nameBytes = Buffer.byteLength(req.name);
      if (nameBytes > MAX_NAME_BYTES) throw invalid("name", `is ${nameBytes} bytes long, more than the ${MAX_NAME_BYTES} of a Kubernetes PV name`);
      requireCapabilities(req.volumeCapabilities, "volume_capabilities");
      for (const c of req.volumeCapabilities) {
        const why = unsupported(c);
        if (why) throw invalid("volume_capabilities", why);
      }
      if (req.volumeContentSource?.type.case) throw invalid("volume_content_source", "is not supported (no snapshots or clones)");
      const want = range(req.capacityRange);
      const replicas = replicasParameter(req.parameters);
      const id = volumeIdFor(req.name);
      return locks.run([`volume:${id}`], async () => {
        const capacity = want.required || want.limit;
        const existing = await registry.get(id);
        if (existing) {
          if (existing.name !== req.name) throw csiError(Code.AlreadyExists, `volume id ${id} belongs to another name`);
          if (existing.deleting) throw csiError(Code.Aborted, `volume ${req.name} is being deleted: DeleteVolume must finish first`);
          if (!fits(existing.capacity, want)) throw csiError(Code.AlreadyExists, `volume ${req.name} exists with capacity ${existing.capacity}, not in the range asked for`);
          await dirs.create(existing, replicas);
          return { volume: volumeOf(existing) };
        }
        // The record first: a create cut short leaves a record that the retry (or DeleteVolume) finds.
        const { record } = await registry.create({ id, name: req.name, capacity, createdAt: Date.now(), ...(await dirs.place(id)) });
        await dirs.create(record, replicas);
        o.log.info({ volume: id, name: req.name, capacity, ...(record.tag ? { tag: record.tag } : {}) }, "volume created");
        return { volume: volumeOf(record) };
      });
    }),

    deleteVolume: g("DeleteVolume", async (req) => {
      if (!req.volumeId) throw invalid("volume_id");
      const id = req.volumeId;
      return locks.run([`volume:${id}`], async () => {
        const rec = await registry.get(id);
        // Marked first: nodes stop serving it, and a CreateVolume of its name waits for the end.
        if (rec) await registry.markDeleting(id);
        await dirs.remove(id, rec);
        await registry.remove(id);
        o.log.info({ volume: id }, "volume deleted");
        return {};
      });
    }),

    controllerPublishVolume: g("ControllerPublishVolume", async (req) => {
      if (!req.volumeId) throw invalid("volume_id");
      if (!req.nodeId) throw invalid("node_id");
      const mode = requireServable(req.volumeCapability, "volume_capability");
      return locks.run([`volume:${req.volumeId}`], async () => {
        if ((await known(req.volumeId)).deleting) throw csiError(Code.NotFound, `volume ${req.volumeId} is being deleted`);
        if (!(await registry.nodes()).has(req.nodeId)) throw csiError(Code.NotFound, `node ${req.nodeId} is not known (no csi-node has reported it)`);
        const pubs = await registry.publications(req.volumeId);
        const here = pubs.get(req.nodeId);
        const readonly = req.readonly || READ_ONLY.has(mode);
        if (here) {
          if (here.readonly !== readonly || here.mode !== mode) throw csiError(Code.AlreadyExists, `volume ${req.volumeId} is published on ${req.nodeId} with other options`);
          return { publishContext: {} };
        }
        const elsewhere = [...pubs.keys()].filter((n) => n !== req.nodeId);
        if (elsewhere.length && (SINGLE_NODE.has(mode) || [...pubs.values()].some((p) => SINGLE_NODE.has(p.mode))))
          throw csiError(Code.FailedPrecondition, `volume ${req.volumeId} is single-node and published on ${elsewhere.join(", ")}`);
        await registry.publish(req.volumeId, req.nodeId, { readonly, mode });
        return { publishContext: {} };
      });
    }),

    controllerUnpublishVolume: g("ControllerUnpublishVolume", async (req) => {
      if (!req.volumeId) throw invalid("volume_id");
      return locks.run([`volume:${req.volumeId}`], async () => {
        await registry.unpublish(req.volumeId, req.nodeId || undefined);
        return {};
      });
    }),

    validateVolumeCapabilities: g("ValidateVolumeCapabilities", async (req) => {
      if (!req.volumeId) throw invalid("volume_id");
      requireCapabilities(req.volumeCapabilities, "volume_capabilities");
      await known(req.volumeId);
      const why = req.volumeCapabilities.map(unsupported).find((w) => w !== undefined);
      if (why) return { message: why };
      return { confirmed: { volumeCapabilities: req.volumeCapabilities, volumeContext: req.volumeContext, parameters: req.parameters } };
    }),

    listVolumes: g("ListVolumes", async (req) => {
      if (req.maxEntries < 0) throw invalid("max_entries", "must not be negative");
      let after = "";
      if (req.startingToken) {
        if (!req.startingToken.startsWith(TOKEN)) throw csiError(Code.Aborted, `starting_token ${JSON.stringify(req.startingToken)} was not given by this plugin`);
        after = Buffer.from(req.startingToken.slice(TOKEN.length), "base64url").toString();
      }
      const { records, more } = await registry.list(after, req.maxEntries || 1_000_000);
      const entries = await Promise.all(
        records.map(async (r) => ({ volume: volumeOf(r), status: { publishedNodeIds: [...(await registry.publications(r.id)).keys()] } })),
      );
      const last = records.at(-1);
      return { entries, nextToken: more && last ? TOKEN + Buffer.from(last.id).toString("base64url") : "" };
    }),

    controllerGetVolume: g("ControllerGetVolume", async (req) => {
      if (!req.volumeId) throw invalid("volume_id");
      const r = await known(req.volumeId);
      return { volume: volumeOf(r), status: { publishedNodeIds: [...(await registry.publications(r.id)).keys()] } };
    }),

    getCapacity: g("GetCapacity", async (req) => {
      if (req.volumeCapabilities.some((c) => unsupported(c))) return { availableCapacity: 0n };
      let free = 0;
      for (const r of (await registry.nodes()).values()) free += r.free;
      return { availableCapacity: BigInt(free) };
    }),

    controllerGetCapabilities: g("ControllerGetCapabilities", async () => ({
      capabilities: [Cap.CREATE_DELETE_VOLUME, Cap.PUBLISH_UNPUBLISH_VOLUME, Cap.LIST_VOLUMES, Cap.GET_CAPACITY, Cap.EXPAND_VOLUME, Cap.LIST_VOLUMES_PUBLISHED_NODES, Cap.PUBLISH_READONLY, Cap.GET_VOLUME].map((type) => ({
        type: { case: "rpc" as const, value: { type } },
      })),
    })),

    controllerExpandVolume: g("ControllerExpandVolume", async (req) => {
      if (!req.volumeId) throw invalid("volume_id");
      if (!req.capacityRange) throw invalid("capacity_range");
      const want = range(req.capacityRange);
      return locks.run([`volume:${req.volumeId}`], async () => {
        const r = await known(req.volumeId);
        const size = Math.max(r.capacity, want.required || want.limit);
        if (want.limit && size > want.limit) throw csiError(Code.OutOfRange, `volume ${req.volumeId} has ${r.capacity} bytes, above limit_bytes; volumes do not shrink`);
        if (size !== r.capacity) await registry.setCapacity(r.id, size);
        return { capacityBytes: BigInt(size), nodeExpansionRequired: false };
      });
    }),
  };
}
