import { hostname } from "node:os";
import { resolve } from "node:path";
import type { Argv } from "yargs";
import type { CsiConfig, CsiNodeConfig } from "../daemon/csi-config.ts";
import { checkRedisUrl, REDIS_URL_FORMS, redisAccess, redisAccessOptions } from "./redis-options.ts";
import { logOptions } from "./log-options.ts";

/** Flags of both CSI roles (the original driver's names). */
export function csiOptions<T>(y: Argv<T>) {
  return logOptions(redisAccessOptions(y))
    .option("endpoint", { type: "string", default: "unix:///csi/csi.sock", describe: "Where to serve CSI: unix:///path/to.sock or tcp://host:port (a stale socket file is replaced)" })
    .option("nodeid", { type: "string", default: hostname(), describe: "This node's name in Kubernetes (NodeGetInfo; publications are recorded under it)" })
    .option("redis-url", { alias: ["u", "redis_url"], type: "string", demandOption: true, describe: `Redis of the filesystem: ${REDIS_URL_FORMS}` })
    .option("debug", { alias: "d", type: "boolean", default: false, describe: "Verbose logs" })
    .option("metrics-port", { type: "number", describe: "Serve Prometheus metrics at http://<host>:<port>/metrics (off unless given)" })
    .option("metrics-listen", { type: "string", default: "0.0.0.0", describe: "Address the metrics server listens on (a host-network plugin: give the node's address, not every interface)" })
    .check((a) => {
      checkRedisUrl("--redis-url", a["redis-url"]);
      if (!/^(unix:\/\/?\/|tcp:\/\/)/.test(a.endpoint)) throw new Error(`--endpoint must be unix:///path/to.sock or tcp://host:port, got "${a.endpoint}"`);
      if (!a.nodeid) throw new Error("--nodeid must not be empty");
      if (a["metrics-port"] !== undefined && !(Number.isInteger(a["metrics-port"]) && a["metrics-port"] >= 0 && a["metrics-port"] <= 65535)) throw new Error(`--metrics-port must be an integer 0..65535, got ${a["metrics-port"]}`);
      return true;
    });
}

export function csiNodeOptions<T>(y: Argv<T>) {
  return csiOptions(y)
    .option("node-url", { type: "string", default: "localhost:5000", describe: "host:port other nodes dial to reach this node's filesystem daemon (on a Redis Cluster: host, with a free port for each volume's daemon)" })
    .option("root-dir", { type: "string", default: "/var/lib/multicloud/volumes", describe: "Root path of the node daemon: this node's bytes, on its local disk (on a Redis Cluster: <root-dir>/<tag> for each volume)" })
    .option("mount-point", { type: "string", default: "/var/lib/multicloud/mounts", describe: "Where the node daemon mounts the filesystem; volumes are bind-mounted from <mount-point>/volumes/<id> (on a Redis Cluster each volume is a filesystem of its own, mounted at <mount-point>/<tag>)" })
    .option("pods-dir", { type: "string", default: "/var/lib/kubelet/pods", describe: "kubelet's pods directory: volumes are bind-mounted only onto target paths beneath it" })
    .option("cluster-secret-file", { type: "string", describe: "Cluster secret for the node daemon (or env MCFS_CLUSTER_SECRET)" })
    .option("tls-cert", { type: "string", describe: "Node certificate for mutual TLS between node daemons (passed on to the node daemon; with --tls-key and --tls-ca)" })
    .option("tls-key", { type: "string", describe: "Key of --tls-cert (passed on to the node daemon)" })
    .option("tls-ca", { type: "string", describe: "Cluster CA for mutual TLS between node daemons (passed on to the node daemon)" })
    .option("insecure", { type: "boolean", default: false, describe: "Run the node daemon without a cluster secret" })
    .option("check-interval", { type: "number", default: 2, describe: "Seconds between checks of the node mount (restart, re-bind pods' volumes)" })
    .check((a) => {
      if (!/^[^:\s]+:\d{1,5}$/.test(a["node-url"])) throw new Error(`--node-url must be host:port, got "${a["node-url"]}"`);
      const pods = resolve(a["pods-dir"]);
      if (pods === "/" || /^\/(proc|sys|dev)(\/|$)/.test(pods)) throw new Error(`--pods-dir must be kubelet's pods directory, not / or under /proc, /sys or /dev, got "${a["pods-dir"]}"`);
      if (!(a["check-interval"] > 0)) throw new Error(`--check-interval must be a number of seconds > 0, got ${a["check-interval"]}`);
      return true;
    });
}

type CsiArgs = Awaited<ReturnType<typeof csiOptions>["argv"]>;
type CsiNodeArgs = Awaited<ReturnType<typeof csiNodeOptions>["argv"]>;

export function csiConfig(a: CsiArgs, version: string): CsiConfig {
  return { endpoint: a.endpoint, nodeId: a.nodeid, redisUrl: a["redis-url"], redisAccess: redisAccess(a, a["redis-url"]), version, debug: a.debug, logFormat: a["log-format"], metricsPort: a["metrics-port"], metricsListen: a["metrics-listen"] };
}

export function csiNodeConfig(a: CsiNodeArgs, env: NodeJS.ProcessEnv, version: string): CsiNodeConfig {
  // The node daemon is given the same files (never their contents: its argv is readable by anyone).
  const passOn = (["cluster-secret-file", "redis-ca", "redis-password-file", "redis-sentinel-password-file", "tls-cert", "tls-key", "tls-ca"] as const).flatMap((k) => (a[k] ? [`--${k}`, a[k]] : []));
  const daemonArgs = [...passOn, "--log-format", a["log-format"], ...(a.insecure ? ["--insecure"] : [])];
  return {
    ...csiConfig(a, version),
    rootDir: resolve(a["root-dir"]),
    mountPoint: resolve(a["mount-point"]),
    podsDir: resolve(a["pods-dir"]),
    nodeUrl: a["node-url"],
    skipNodeMount: env.SKIP_NODE_MOUNT === "true",
    daemonArgs,
    checkIntervalMs: a["check-interval"] * 1000,
  };
}
