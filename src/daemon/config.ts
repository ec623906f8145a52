/** Everything `mcfs daemon` needs, decided once from flags and environment by the CLI. */
export interface DaemonConfig {
  mountPath: string;
  rootPath: string;
  port: number;
  /** undefined: start a private redis-server. */
  redisUrl?: string;
  hostIp: string;
  debug: boolean;
  singleThread: boolean;
  /** Where copies fetched from other nodes are kept (in a subdirectory per node). */
  cacheDir: string;
  ramCacheBytes: number;
  ramCacheMaxFileBytes: number;
  diskCacheBytes: number;
  /** Data directory of the private redis-server. */
  embeddedRedisDir: string;
  entryTimeout: number;
  attrTimeout: number;
  allowOther: boolean;
  /** Shared by the nodes of a cluster; every peer call carries it. Absent only with insecure. */
  clusterSecret?: string;
  insecure: boolean;
  /** Serve Prometheus metrics on this port (undefined: off). */
  metricsPort?: number;
}
