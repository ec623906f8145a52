import { resolve, join } from "node:path";
import { E, errnoOf } from "../util/errno.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import { readFileSync } from "node:fs";
import type { Argv } from "yargs";
import type { DaemonConfig } from "../daemon/config.ts";
import { loadPeerTls, type PeerTls } from "../peer/peer-tls.ts";
import { checkRedisUrl, REDIS_URL_FORMS, redisAccess, redisAccessOptions } from "./redis-options.ts";
import { logOptions } from "./log-options.ts";
import { MAX_REPLICAS } from "../replicas/replica-count.ts";

const OCTAL_MODE = /^(0o?)?[0-7]{1,4}$/;

export function daemonOptions<T>(y: Argv<T>) {
  return logOptions(redisAccessOptions(y))
    .option("mount_path", { alias: ["f", "mount-path"], type: "string", demandOption: true, describe: "Where the filesystem appears (created if missing; a dead mount left by a crash is cleared)" })
    .option("root_path", { alias: ["r", "root-path"], type: "string", demandOption: true, describe: "This node's local directory holding the bytes as plain files at their namespace paths; files already there are published at start" })
    .option("root-mode", { type: "string", default: "0755", describe: "Mode (octal) of the mount's top directory when this node creates the namespace; an existing namespace keeps its own (the root path on disk stays 0700 either way)" })
    .option("port", { alias: "p", type: "number", default: 5000, describe: "Port this node serves other nodes on (0: a free one, registered as picked); not opened with the private Redis" })
    .option("redis_url", { alias: ["u", "redis-url"], type: "string", describe: `Redis holding the metadata: ${REDIS_URL_FORMS}. Omitted: start a private redis-server (single node)` })
    .option("host_ip", { alias: ["i", "host-ip"], type: "string", default: "localhost", describe: "Address other nodes dial to reach this node; the peer port and --metrics-port listen on it unless --listen is given" })
    .option("listen", { type: "string", describe: "Local address (IP or host name) the peer port and --metrics-port listen on, when other nodes dial another one (-i behind NAT); 0.0.0.0 for every address [default: --host_ip]" })
    .option("debug", { alias: "d", type: "boolean", default: false, describe: "Trace every filesystem operation (and libfuse's own debug output)" })
    .option("single", { alias: "s", type: "boolean", default: false, describe: "Serve FUSE requests on one thread" })
    .option("cache-dir", { type: "string", describe: "Directory for copies of other nodes' files, owned by root and writable by no one else (env MULTICLOUD_FS_DISK_CACHE) [default: <root_path>/.mcfs/cache]" })
    .option("ram-cache-mib", { type: "number", default: 256, describe: "RAM for copies of other nodes' small files (MiB, 0 = none)" })
    .option("ram-cache-max-file-mib", { type: "number", default: 4, describe: "Largest file kept in the RAM cache (MiB)" })
    .option("disk-cache-mib", { type: "number", default: 1024, describe: "Disk for copies of other nodes' files in --cache-dir (MiB); bigger files are read in ranges from their holder" })
    .option("redis-dir", { type: "string", describe: "Data directory of the private redis-server when no --redis_url is given [default <root_path>/.mcfs/redis]" })
    .option("entry-timeout", { type: "number", describe: "Seconds the kernel may cache a name lookup [default: 60 with the private Redis (no other node can change anything), 10 with --redis_url (other nodes' changes are pushed to the kernel as they happen; this bounds staleness if one is missed)]" })
    .option("attr-timeout", { type: "number", describe: "Seconds the kernel may cache attributes [default: as --entry-timeout]" })
    .option("cluster-secret-file", { type: "string", describe: "File holding the secret shared by the nodes of a cluster; peer calls without it are refused (env MCFS_CLUSTER_SECRET holds the secret itself)" })
    .option("insecure", { type: "boolean", default: false, describe: "Serve other nodes without a cluster secret or TLS (anyone who can reach --port can read the files)" })
    .option("tls-cert", { type: "string", describe: "PEM certificate of this node, signed by --tls-ca: peers talk mutual TLS (with --tls-key and --tls-ca; the cluster secret becomes optional)" })
    .option("tls-key", { type: "string", describe: "PEM private key of --tls-cert" })
    .option("tls-ca", { type: "string", describe: "PEM certificate of the cluster CA: peers holding a certificate it signed are members, no others" })
    .option("metrics-port", { type: "number", describe: "Serve Prometheus metrics at http://<host>:<port>/metrics (off unless given; 0 picks a free port)" })
    .option("allow-other", { type: "boolean", describe: "Let every user of the machine use the mount (permissions are still checked); --no-allow-other limits it to the user who mounted [default: on as root; for another user, on where /etc/fuse.conf has user_allow_other, else off (logged once)]" })
    .option("replicas", { type: "number", describe: "Copies of each file the cluster keeps, on as many nodes (a cluster-wide setting stored in Redis: the last node started with it sets it; a directory's user.mcfs.replicas attribute overrides it for the files under it) [default: as set before, else 1]" })
    .option("replica-grace", { type: "number", default: 300, describe: "Seconds a holder's node may be gone before its copies are made again on other nodes" })
    .option("replica-check", { type: "number", default: 60, describe: "Seconds between looks for files with fewer copies than wanted (one node looks at a time)" })
    .option("fsname", { type: "string", default: "mcfs", describe: "Name of the mount in /proc/mounts (mount's source column); the CSI driver names each volume's mount after its volume" })
    .option("require-namespace", { type: "boolean", default: false, describe: "Refuse to start unless the filesystem already exists in Redis (the CSI driver's volume daemons: the controller makes each volume's filesystem, and a deleted one must not come back)" })
    .option("nonempty", { type: "boolean", default: false, describe: "Mount over a --mount_path that has something in it (hidden while mounted); without it such a mount point is refused" })
    .check((a) => {
      if (!Number.isInteger(a.port) || a.port < 0 || a.port > 65535) throw new Error(`--port must be an integer 0..65535, got ${a.port}`);
      for (const k of ["ram-cache-mib", "ram-cache-max-file-mib", "disk-cache-mib"] as const) if (!(a[k] >= 0)) throw new Error(`--${k} must be a number of MiB >= 0, got ${a[k]}`);
      if (a["metrics-port"] !== undefined && !(Number.isInteger(a["metrics-port"]) && a["metrics-port"] >= 0 && a["metrics-port"] <= 65535)) throw new Error(`--metrics-port must be an integer 0..65535, got ${a["metrics-port"]}`);
      for (const k of ["entry-timeout", "attr-timeout"] as const) if (a[k] !== undefined && !(a[k] >= 0)) throw new Error(`--${k} must be a number of seconds >= 0, got ${a[k]}`);
      if (!OCTAL_MODE.test(a["root-mode"])) throw new Error(`--root-mode must be an octal mode from 0000 to 7777 (such as 0755), got "${a["root-mode"]}"`);
      if (!a.mount_path || !a.root_path) throw new Error("--mount_path and --root_path must not be empty");
      if (resolve(a.mount_path) === resolve(a.root_path)) throw new Error("--mount_path and --root_path must be different directories");
      const m = resolve(a.mount_path), r = resolve(a.root_path);
      if (m.startsWith(r + "/")) throw new Error(`--mount_path ${m} must not be inside --root_path ${r}`);
      if (r.startsWith(m + "/")) throw new Error(`--root_path ${r} must not be inside --mount_path ${m}`);
      const tls = (["tls-cert", "tls-key", "tls-ca"] as const).filter((k) => a[k] !== undefined);
      if (tls.length > 0 && tls.length < 3) throw new Error(`--tls-cert, --tls-key and --tls-ca go together: ${["tls-cert", "tls-key", "tls-ca"].filter((k) => !tls.includes(k as never)).map((k) => `--${k}`).join(" and ")} missing`);
      if (a.replicas !== undefined && !(Number.isInteger(a.replicas) && a.replicas >= 1 && a.replicas <= MAX_REPLICAS)) throw new Error(`--replicas must be an integer 1..${MAX_REPLICAS}, got ${a.replicas}`);
      if (a.replicas !== undefined && a.replicas > 1 && a.redis_url === undefined) throw new Error("--replicas needs other nodes: give --redis_url (a private Redis has no cluster to copy to)");
      for (const k of ["replica-grace", "replica-check"] as const) if (!(a[k] > 0)) throw new Error(`--${k} must be a number of seconds > 0, got ${a[k]}`);
      if (!/^[A-Za-z0-9._:-]{1,200}$/.test(a.fsname)) throw new Error(`--fsname must be 1..200 letters, digits, '.', '_', ':' or '-', got "${a.fsname}"`);
      if (a.listen === "") throw new Error("--listen must not be empty (0.0.0.0 listens on every address)");
      if (a.redis_url !== undefined) checkRedisUrl("--redis_url", a.redis_url);
      return true;
    });
}

const MIB = 1 << 20;

type DaemonArgs = Awaited<ReturnType<typeof daemonOptions>["argv"]>;

function peerTls(a: DaemonArgs): PeerTls | undefined {
  const [cert, key, ca] = [a["tls-cert"], a["tls-key"], a["tls-ca"]];
  return cert !== undefined && key !== undefined && ca !== undefined ? loadPeerTls({ cert, key, ca }) : undefined;
}

/** The cluster secret from --cluster-secret-file or MCFS_CLUSTER_SECRET; a cluster with neither it nor TLS needs --insecure. */
function clusterSecret(a: DaemonArgs, env: NodeJS.ProcessEnv, tls: boolean): string | undefined {
  let secret: string | undefined;
  if (a["cluster-secret-file"] !== undefined) {
    try {
      secret = readFileSync(a["cluster-secret-file"], "utf8").trim();
    } catch (e) {
      throw new Error(`--cluster-secret-file ${a["cluster-secret-file"]}: ${errnoOf(e) === E.ENOENT ? "no such file" : (e as Error).message}`);
    }
    if (!secret) throw new Error(`--cluster-secret-file ${a["cluster-secret-file"]} is empty`);
  } else if (env.MCFS_CLUSTER_SECRET) secret = env.MCFS_CLUSTER_SECRET.trim();
  if (secret !== undefined && secret.length < 16) throw new Error("the cluster secret must be at least 16 characters");
  if (a.redis_url && secret === undefined && !tls && !a.insecure)
    throw new Error("nodes of a cluster (--redis_url given) authenticate each other: pass --tls-cert/--tls-key/--tls-ca or --cluster-secret-file FILE (or set MCFS_CLUSTER_SECRET), or --insecure to run without either");
  return secret;
}

export function daemonConfig(a: DaemonArgs, env: NodeJS.ProcessEnv): DaemonConfig {
  const rootPath = resolve(a.root_path);
  const tls = peerTls(a);
  return {
    mountPath: resolve(a.mount_path),
    rootPath,
    rootMode: parseInt(a["root-mode"].replace(/^0o/, ""), 8),
    port: a.port,
    redisUrl: a.redis_url,
    redisAccess: redisAccess(a, a.redis_url),
    hostIp: a.host_ip,
    listen: a.listen ?? a.host_ip,
    debug: a.debug,
    logFormat: a["log-format"],
    singleThread: a.single,
    // Not /tmp: any user could make that name first, and stop the daemon from starting.
    cacheDir: resolve(a["cache-dir"] ?? env.MULTICLOUD_FS_DISK_CACHE ?? join(rootPath, RESERVED_NAME, "cache")),
    ramCacheBytes: Math.floor(a["ram-cache-mib"] * MIB),
    ramCacheMaxFileBytes: Math.floor(a["ram-cache-max-file-mib"] * MIB),
    diskCacheBytes: Math.floor(a["disk-cache-mib"] * MIB),
    embeddedRedisDir: resolve(a["redis-dir"] ?? join(rootPath, RESERVED_NAME, "redis")),
    entryTimeout: a["entry-timeout"] ?? (a.redis_url ? 10 : 60),
    attrTimeout: a["attr-timeout"] ?? (a.redis_url ? 10 : 60),
    allowOther: a["allow-other"],
    nonempty: a.nonempty,
    fsname: a.fsname,
    requireNamespace: a["require-namespace"],
    clusterSecret: clusterSecret(a, env, tls !== undefined),
    peerTls: tls,
    insecure: a.insecure,
    metricsPort: a["metrics-port"],
    replicas: a.replicas,
    replicaGraceMs: a["replica-grace"] * 1000,
    replicaCheckMs: a["replica-check"] * 1000,
  };
}
