import type { CsiConfig } from "./csi-config.ts";
import { connectRedis } from "../meta/redis-connect.ts";
import { openStore } from "../meta/open-store.ts";
import { createRedisVolumeRegistry } from "../csi/redis-volume-registry.ts";
import { createStoreVolumeDirs } from "../csi/store-volume-dirs.ts";
import { createClusterVolumeDirs } from "../csi/cluster-volume-dirs.ts";
import type { VolumeDirs } from "../csi/volume-dirs.ts";
import { clusterPrefix, isClusterUrl } from "../meta/redis-cluster.ts";
import { createControllerService } from "../csi/controller.ts";
import { createIdentityService } from "../csi/identity.ts";
import { serveCsi } from "../csi/server.ts";
import { csiMetrics } from "./csi-metrics.ts";
import { redactUrl, type Logger } from "../util/log.ts";

export interface Role {
  stop(): Promise<void>;
}

/** Nodes stop serving a deleted volume within their check interval (2 s by default). */
const STOP_WAIT_MS = 20_000;

/** The controller: volumes as directories of the namespace, or filesystems of their own on a Redis Cluster, made and removed through Redis (no mount). */
export async function runCsiController(cfg: CsiConfig, log: Logger): Promise<Role> {
  const clog = log.child({ role: "csi-controller" });
  const onEvent = (ev: "error" | "ready", detail?: string) => (ev === "error" ? clog.error({ redis: redactUrl(cfg.redisUrl), detail }, "Redis connection lost") : clog.info("Redis connection back"));
  const cluster = isClusterUrl(cfg.redisUrl);
  const registry = createRedisVolumeRegistry(await connectRedis({ url: cfg.redisUrl, ...cfg.redisAccess }, onEvent), cluster ? clusterPrefix(cfg.redisUrl) : "");
  const origin = `csi-controller:${cfg.nodeId}`;
  let dirs: VolumeDirs & { close(): Promise<void> };
  if (cluster) {
    dirs = createClusterVolumeDirs({ url: cfg.redisUrl, access: cfg.redisAccess, registry, nodeId: origin, stopWaitMs: STOP_WAIT_MS, log: clog });
  } else {
    // Volumes are removed after their pods are gone: no node needs to see each removal at once.
    const store = await openStore({ url: cfg.redisUrl, access: cfg.redisAccess, nodeId: origin, onConnectionEvent: onEvent, waitForAcks: false });
    await store.init(0o755, 0, 0);
    dirs = { ...createStoreVolumeDirs(store), close: () => store.close() };
  }
  const metrics = await csiMetrics(cfg.metricsPort, cfg.metricsListen, clog);
  const server = await serveCsi(
    cfg.endpoint,
    {
      identity: createIdentityService({ version: cfg.version, ready: () => registry.ping(), log: clog }),
      controller: createControllerService({ registry, dirs, log: clog }),
    },
    clog,
    metrics.interceptors,
  );
  return {
    async stop() {
      await server.close();
      await metrics.close();
      await registry.close();
      await dirs.close();
    },
  };
}
