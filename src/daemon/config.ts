import type { PeerTls } from "../peer/peer-tls.ts";
import type { RedisAccess } from "../meta/redis-connect.ts";
import type { LogFormat } from "../util/log.ts";

/** Everything `mcfs daemon` needs, decided once from flags and environment by the CLI. */
export interface DaemonConfig {
  mountPath: string;
  rootPath: string;
  /** Mode of the namespace's root directory when this node creates the namespace. */
  rootMode: number;
  port: number;
  /** undefined: start a private redis-server. */
  redisUrl?: string;
  /** CA and password for redisUrl, from files. */
  redisAccess: RedisAccess;
  /** Address other nodes dial (registered in Redis). */
  hostIp: string;
  /** Local address the peer and metrics servers listen on (hostIp unless --listen). */
  listen: string;
  debug: boolean;
  logFormat: LogFormat;
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
  /** Let every user use the mount; undefined: wherever /etc/fuse.conf permits it (always as root). */
  allowOther?: boolean;
  /** Mount over a directory that has something in it (hidden while mounted). */
  nonempty: boolean;
  /** The mount's source in /proc/mounts. */
  fsname: string;
  /** Never create the namespace: it must exist already. */
  requireNamespace: boolean;
  /** Shared by the nodes of a cluster; every peer call carries it. Absent with peerTls alone, or insecure. */
  clusterSecret?: string;
  /** Mutual TLS between the nodes (certificate, key, cluster CA), already checked to fit together. */
  peerTls?: PeerTls;
  insecure: boolean;
  /** Serve Prometheus metrics on this port (undefined: off). */
  metricsPort?: number;
  /** Set the cluster-wide replica count (undefined: leave it as it is). */
  replicas?: number;
  /** How long a holder may be gone before its copies are made elsewhere. */
  replicaGraceMs: number;
  /** Between looks for files with too few copies. */
  replicaCheckMs: number;
}
