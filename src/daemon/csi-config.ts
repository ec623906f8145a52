import type { RedisAccess } from "../meta/redis-connect.ts";
import type { LogFormat } from "../util/log.ts";

/** What `mcfs csi-controller` and `mcfs csi-node` need, decided once from flags and environment. */
export interface CsiConfig {
  endpoint: string;
  nodeId: string;
  redisUrl: string;
  /** CA and password for redisUrl, from files. */
  redisAccess: RedisAccess;
  /** Version reported by GetPluginInfo. */
  version: string;
  debug: boolean;
  logFormat: LogFormat;
  /** Serve Prometheus metrics on this port (undefined: off). */
  metricsPort?: number;
  /** Address the metrics server binds. */
  metricsListen: string;
}

export interface CsiNodeConfig extends CsiConfig {
  /** Node-level daemon: its root path (local bytes) and mount point. */
  rootDir: string;
  mountPoint: string;
  /** kubelet's pods directory: every target path must lie beneath it. */
  podsDir: string;
  /** host:port other nodes dial for this node's daemon. */
  nodeUrl: string;
  /** The node daemon runs elsewhere (its own container): only watch its mount. */
  skipNodeMount: boolean;
  /** Extra flags for the node daemon this process starts (cluster secret, caches...). */
  daemonArgs: string[];
  /** How often the node mount is checked (ms). */
  checkIntervalMs: number;
}
