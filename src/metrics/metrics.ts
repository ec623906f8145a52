import { Counter, Gauge, Histogram, Registry } from "prom-client";

const LATENCY = [0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/**
 * A counter by one label that hot paths add to in a plain map, read into prom-client when scraped:
 * prom-client hashes and checks the labels of every inc, which cost more than some of the operations
 * counted (a FUSE reply, a Redis call).
 */
function talliedCounter(name: string, help: string, label: string, registers: Registry[]): Counter & { add(value: string): void } {
  const pending = new Map<string, number>();
  const counter = new Counter({
    name, help, labelNames: [label], registers,
    collect() {
      for (const [value, n] of pending) this.inc({ [label]: value }, n);
      pending.clear();
    },
  });
  return Object.assign(counter, { add: (value: string) => void pending.set(value, (pending.get(value) ?? 0) + 1) });
}

/**
 * A latency histogram by one label that hot paths observe into plain arrays, formatted for prom-client
 * when scraped: prom-client's Histogram builds and hashes a label object at every observation, which
 * cost more of the JS thread than the FUSE replies it timed.
 */
function talliedHistogram(name: string, help: string, label: string, buckets: readonly number[], registers: Registry[]) {
  const series = new Map<string, { counts: number[]; sum: number }>();
  const observe = (value: string, seconds: number) => {
    let s = series.get(value);
    if (!s) series.set(value, (s = { counts: new Array<number>(buckets.length + 1).fill(0), sum: 0 }));
    let i = 0;
    while (i < buckets.length && seconds > buckets[i]!) i++;
    s.counts[i]!++;
    s.sum += seconds;
  };
  const metric = {
    name,
    help,
    type: "histogram" as const,
    aggregator: "sum" as const,
    get() {
      const values: { metricName: string; labels: Record<string, string | number>; value: number }[] = [];
      for (const [v, s] of series) {
        let total = 0;
        for (let i = 0; i <= buckets.length; i++) {
          total += s.counts[i]!;
          values.push({ metricName: `${name}_bucket`, labels: { le: i < buckets.length ? buckets[i]! : "+Inf", [label]: v }, value: total });
        }
        values.push({ metricName: `${name}_sum`, labels: { [label]: v }, value: s.sum });
        values.push({ metricName: `${name}_count`, labels: { [label]: v }, value: total });
      }
      return Promise.resolve({ name, help, type: metric.type, aggregator: metric.aggregator, values });
    },
    observe,
    /** Call the function returned at the end of what is timed. */
    startTimer(value: string): () => void {
      const t0 = performance.now();
      return () => observe(value, (performance.now() - t0) / 1000);
    },
    reset: () => series.clear(),
  };
  for (const r of registers) r.registerMetric(metric as unknown as Parameters<Registry["registerMetric"]>[0]);
  return metric;
}

/**
 * Every metric mcfs exports, on one registry. Labels stay low-cardinality: operation, method, tier,
 * errno, gRPC code; never a path or an inode.
 */
export function createMetrics() {
  const registry = new Registry();
  const r = { registers: [registry] };
  return {
    registry,
    fuseOps: talliedCounter("mcfs_fuse_operations_total", "FUSE operations answered in JS, by operation (reads and writes of local files are served by the shim: see mcfs_read_bytes_total)", "op", r.registers),
    shimLookups: new Counter({ name: "mcfs_shim_lookups_total", help: "Lookups the FUSE shim answered itself, from names whose records JS had prefetched (they never reach JS: not in mcfs_fuse_operations_total)", ...r }),
    shimAbsent: new Counter({ name: "mcfs_shim_absent_total", help: "Lookups the FUSE shim answered ENOENT itself, for names missing from a sole node's complete listings, or from the listings of directories a cluster node watches (they never reach JS: not in mcfs_fuse_operations_total)", ...r }),
    shimCreates: new Counter({ name: "mcfs_shim_creates_total", help: "Files the FUSE shim made and answered the create of itself (JS takes them in after: they are in mcfs_fuse_operations_total as op created, not create)", ...r }),
    shimTruncates: new Counter({ name: "mcfs_shim_truncates_total", help: "Truncates the FUSE shim made and answered itself, through the handle of a file it had just made (a writer setting the size it wrote: they never reach JS)", ...r }),
    shimOpens: new Counter({ name: "mcfs_shim_opens_total", help: "Read-only opens the FUSE shim answered itself, of files this node watches that JS had opened at the same version, or whose copy read-ahead fetched at that version (they reach JS after, as op opened, not open)", ...r }),
    shimGetattrs: new Counter({ name: "mcfs_shim_getattrs_total", help: "Getattrs the FUSE shim answered itself, from records JS had fresh (they never reach JS: not in mcfs_fuse_operations_total)", ...r }),
    fuseKillPrivileges: new Gauge({ name: "mcfs_fuse_kill_privileges", help: "1 when the kernel leaves taking setuid and setgid on writes to mcfs (FUSE_HANDLE_KILLPRIV_V2): writes without a security.capability lookup each", ...r }),
    fusePassthrough: new Gauge({ name: "mcfs_fuse_passthrough", help: "1 when the kernel reads and writes this node's own files itself (FUSE passthrough): a writer's bytes then reach no mcfs counter", ...r }),
    passthroughOpens: new Counter({ name: "mcfs_passthrough_opens_total", help: "Opens and creates the kernel reads and writes in passthrough: writers of this node's own files, and readers of them while one is open", ...r }),
    fuseFlushes: new Counter({ name: "mcfs_fuse_flushes_total", help: "Flush requests the kernel sent, answered by the shim or by JS (a handle opened read-only gets none at its closes)", ...r }),
    fuseErrors: new Counter({ name: "mcfs_fuse_operation_errors_total", help: "FUSE operations answered with an error, by operation and errno", labelNames: ["op", "errno"], ...r }),
    fuseLatency: talliedHistogram("mcfs_fuse_operation_duration_seconds", "Time to answer a FUSE operation in JS", "op", LATENCY, r.registers),
    readBytes: new Counter({ name: "mcfs_read_bytes_total", help: "Bytes read through the mount, by what served them: local (the shim, from a fd: a file on this node's disk or a cached copy, in RAM or on disk), memory (JS: ranged reads of a file held elsewhere)", labelNames: ["source"], ...r }),
    writtenBytes: new Counter({ name: "mcfs_written_bytes_total", help: "Bytes written through the mount", ...r }),
    peerBytes: new Counter({ name: "mcfs_peer_bytes_total", help: "File bytes moved between nodes: received from peers, served to peers", labelNames: ["direction"], ...r }),
    readAheadUnused: new Counter({ name: "mcfs_readahead_unused_bytes_total", help: "Bytes of small files fetched ahead of their readers (along with another file, or read ahead) and evicted before anyone opened them: bytes moved for nothing", ...r }),
    watchedOpens: new Counter({ name: "mcfs_watched_opens_total", help: "Opens for reading answered from what this node read when it began to watch the file, with no round trip to Redis (the file's next version waits for this node's acknowledgement)", ...r }),
    cacheHits: new Counter({ name: "mcfs_cache_hits_total", help: "Opens of other nodes' files answered from this node's cache", ...r }),
    cacheMisses: new Counter({ name: "mcfs_cache_misses_total", help: "Opens of other nodes' files that had to fetch them", ...r }),
    cacheEvictions: new Counter({ name: "mcfs_cache_evictions_total", help: "Copies evicted from the cache, by tier", labelNames: ["tier"], ...r }),
    cacheDemotions: new Counter({ name: "mcfs_cache_demotions_total", help: "RAM copies pushed out and moved to the disk tier (result: moved, or failed and evicted)", labelNames: ["result"], ...r }),
    cacheBytes: new Gauge({ name: "mcfs_cache_bytes", help: "Bytes of copies in the cache, by tier", labelNames: ["tier"], ...r }),
    cacheFiles: new Gauge({ name: "mcfs_cache_files", help: "Copies in the cache, by tier", labelNames: ["tier"], ...r }),
    cacheLimit: new Gauge({ name: "mcfs_cache_limit_bytes", help: "Size limit of each cache tier", labelNames: ["tier"], ...r }),
    rpcs: new Counter({ name: "mcfs_peer_rpcs_total", help: "Peer RPCs, by side (client, server), method and gRPC code", labelNames: ["side", "method", "code"], ...r }),
    rpcLatency: new Histogram({ name: "mcfs_peer_rpc_duration_seconds", help: "Time of peer RPCs (to the end of a stream)", labelNames: ["side", "method"], buckets: LATENCY, ...r }),
    redisOps: talliedCounter("mcfs_redis_operations_total", "Metadata operations on Redis (each one script or a few commands), by operation", "op", r.registers),
    redisErrors: new Counter({ name: "mcfs_redis_operation_errors_total", help: "Metadata operations on Redis that failed for a reason other than the filesystem's (connection, timeout)", labelNames: ["op"], ...r }),
    redisLatency: talliedHistogram("mcfs_redis_operation_duration_seconds", "Time of metadata operations on Redis", "op", LATENCY, r.registers),
    nodes: new Gauge({ name: "mcfs_nodes", help: "Nodes of the cluster as this node sees them, by state (live, expired)", labelNames: ["state"], ...r }),
    replicaCopies: new Counter({ name: "mcfs_replica_copies_total", help: "Replicas this node made (copies of other nodes' files asked of it)", ...r }),
    replicaBytes: new Counter({ name: "mcfs_replica_bytes_total", help: "Bytes of the replicas this node made", ...r }),
    underReplicated: new Gauge({ name: "mcfs_under_replicated_files", help: "Files with fewer copies than wanted, at the last look (by the node that looks; -1 elsewhere)", ...r }),
    replicaBacklog: new Gauge({ name: "mcfs_replica_backlog", help: "Replicas asked for and not yet made, cluster-wide, at the last look", ...r }),
    openFiles: new Gauge({ name: "mcfs_open_files", help: "Files open through this node's mount", ...r }),
    csiCalls: new Counter({ name: "mcfs_csi_calls_total", help: "CSI calls, by method and gRPC code", labelNames: ["method", "code"], ...r }),
    csiLatency: new Histogram({ name: "mcfs_csi_call_duration_seconds", help: "Time of CSI calls", labelNames: ["method"], buckets: LATENCY, ...r }),
  };
}

export type Metrics = ReturnType<typeof createMetrics>;

/** Store methods that are no operation on Redis (watchesHold asks nothing of it). */
const NOT_OPERATIONS = new Set(["subscribe", "close", "watchesHold", "onWatchesHold"]);

/**
 * The store's methods, timed and counted by name. Errors the filesystem expects (ENOENT, EEXIST...:
 * they carry an errno) are answers, not failures of Redis.
 */
export function instrument<T extends object>(target: T, m: Metrics, isAnswer: (e: unknown) => boolean): T {
  return new Proxy(target, {
    get(obj, prop, recv) {
      const v = Reflect.get(obj, prop, recv) as unknown;
      if (typeof v !== "function" || typeof prop !== "string" || NOT_OPERATIONS.has(prop)) return v;
      return (...args: unknown[]) => {
        const end = m.redisLatency.startTimer(prop);
        m.redisOps.add(prop);
        const out = (v as (...a: unknown[]) => unknown).apply(obj, args);
        if (!(out instanceof Promise)) {
          end();
          return out;
        }
        return out.then(
          (x) => (end(), x),
          (e: unknown) => {
            end();
            if (!isAnswer(e)) m.redisErrors.inc({ op: prop });
            throw e;
          },
        );
      };
    },
  });
}
