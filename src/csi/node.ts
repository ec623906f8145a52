import * as fs from "node:fs";
import { Code, type ServiceImpl } from "@connectrpc/connect";
import { Node, NodeServiceCapability_RPC_Type as Cap, VolumeUsage_Unit as Unit } from "../gen/csi/v1/csi_pb.ts";
import type { Logger } from "../util/log.ts";
import { csiError, createOpLocks, guard, invalid } from "./errors.ts";
import { bindOptions, requireServable } from "./capabilities.ts";
import type { VolumeBinder } from "./volume-binder.ts";
import type { VolumeSources } from "./volume-source.ts";

export interface NodeServiceOptions {
  nodeId: string;
  sources: VolumeSources;
  binder: VolumeBinder;
  log: Logger;
}

const errCode = (e: unknown) => (e as NodeJS.ErrnoException).code;

/** The node service: a volume is published by bind-mounting its directory onto the pod's target. */
export function createNodeService(o: NodeServiceOptions): Partial<ServiceImpl<typeof Node>> {
  const locks = createOpLocks();
  const g = <Req, Res>(m: string, fn: (r: Req) => Promise<Res>) => guard(o.log, m, fn);

  return {
    nodePublishVolume: g("NodePublishVolume", async (req) => {
      if (!req.volumeId) throw invalid("volume_id");
      if (!req.targetPath) throw invalid("target_path");
      requireServable(req.volumeCapability, "volume_capability");
      const options = bindOptions(req.volumeCapability!, req.readonly, "volume_capability");
      o.binder.checkTarget(req.targetPath);
      const target = req.targetPath;
      return locks.run([`volume:${req.volumeId}`, `target:${target}`], async () => {
        o.binder.publish(await o.sources.ready(req.volumeId), target, options);
        o.log.info({ volume: req.volumeId, target, options }, "volume published");
        return {};
      });
    }),

    nodeUnpublishVolume: g("NodeUnpublishVolume", async (req) => {
      if (!req.volumeId) throw invalid("volume_id");
      if (!req.targetPath) throw invalid("target_path");
      o.binder.checkTarget(req.targetPath);
      const target = req.targetPath;
      return locks.run([`volume:${req.volumeId}`, `target:${target}`], async () => {
        o.binder.unpublish(o.sources.owner(req.volumeId), target);
        o.log.info({ volume: req.volumeId, target }, "volume unpublished");
        return {};
      });
    }),

    nodeGetVolumeStats: g("NodeGetVolumeStats", async (req) => {
      if (!req.volumeId) throw invalid("volume_id");
      if (!req.volumePath) throw invalid("volume_path");
      await o.sources.ready(req.volumeId);
      let st: fs.StatsFs;
      try {
        st = fs.statfsSync(req.volumePath);
      } catch (e) {
        if (errCode(e) === "ENOENT") throw csiError(Code.NotFound, `volume path ${req.volumePath} does not exist`);
        if (errCode(e) === "ENOTCONN") return { usage: [], volumeCondition: { abnormal: true, message: `the mount at ${req.volumePath} is down` } };
        throw e;
      }
      const total = st.blocks * st.bsize, avail = st.bavail * st.bsize;
      return {
        usage: [
          { unit: Unit.BYTES, total: BigInt(total), available: BigInt(avail), used: BigInt(total - st.bfree * st.bsize) },
          { unit: Unit.INODES, total: BigInt(st.files), available: BigInt(st.ffree), used: BigInt(st.files - st.ffree) },
        ],
        volumeCondition: { abnormal: false, message: "" },
      };
    }),

    nodeGetCapabilities: g("NodeGetCapabilities", async () => ({
      capabilities: [Cap.GET_VOLUME_STATS, Cap.VOLUME_CONDITION].map((type) => ({ type: { case: "rpc" as const, value: { type } } })),
    })),

    nodeGetInfo: g("NodeGetInfo", async () => ({ nodeId: o.nodeId })),
  };
}
