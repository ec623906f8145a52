import type { ServiceImpl } from "@connectrpc/connect";
import { Identity, PluginCapability_Service_Type as Svc, PluginCapability_VolumeExpansion_Type as Expansion } from "../gen/csi/v1/csi_pb.ts";
import type { Logger } from "../util/log.ts";
import { guard } from "./errors.ts";

export const DRIVER_NAME = "csi.multicloud.fs";

export interface IdentityOptions {
  version: string;
  /** Ready to serve: Redis answers (and, on a node, the node-level mount is alive). */
  ready(): Promise<boolean>;
  log: Logger;
}

export function createIdentityService(o: IdentityOptions): ServiceImpl<typeof Identity> {
  return {
    getPluginInfo: guard(o.log, "GetPluginInfo", async () => ({ name: DRIVER_NAME, vendorVersion: o.version })),
    getPluginCapabilities: guard(o.log, "GetPluginCapabilities", async () => ({
      capabilities: [
        { type: { case: "service" as const, value: { type: Svc.CONTROLLER_SERVICE } } },
        { type: { case: "volumeExpansion" as const, value: { type: Expansion.ONLINE } } },
      ],
    })),
    probe: guard(o.log, "Probe", async () => ({ ready: await o.ready() })),
  };
}
