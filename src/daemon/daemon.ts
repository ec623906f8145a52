import * as fs from "node:fs";
import { join } from "node:path";
import type { DaemonConfig } from "./config.ts";
import { lockRoot } from "./root-lock.ts";
import { nodeIdentity } from "./node-identity.ts";
import { startEmbeddedRedis, type EmbeddedRedis } from "./embedded-redis.ts";
import { scanRoot } from "./startup-scan.ts";
import { createRedisStore } from "../meta/redis-store.ts";
import type { MetadataStore } from "../meta/store.ts";
import { createVfs, RESERVED_NAME, type Vfs } from "../vfs/vfs.ts";
import { createRemoteData, type RemoteData } from "../vfs/remote-data.ts";
import { createCopyCache, type CopyCache } from "../cache/copy-cache.ts";
import { createMetrics, instrument, type Metrics } from "../metrics/metrics.ts";
import { observeRpcs } from "../metrics/rpc-interceptor.ts";
import { serveMetrics } from "../metrics/metrics-server.ts";
import { createProgress } from "../util/progress.ts";
import { createTodoApplier } from "../vfs/local-todo.ts";
import { startPeerServer } from "../peer/peer-server.ts";
import { createPeerPool } from "../peer/peer-client.ts";
import { startFuseSession, type FuseSession } from "../fuse/session.ts";
import { E, FsError, errnoName, setUnexpectedErrorLogger } from "../util/errno.ts";
import { redactUrl, type Logger } from "../util/log.ts";

const HEARTBEAT_MS = 5_000;
const ACK_FLUSH_MS = 5;
const NODE_TTL_MS = 15_000;

export interface Daemon {
  readonly nodeId: string;
  /** Resolves when the daemon has stopped (signal, or the mount was taken away). */
  readonly done: Promise<void>;
  stop(reason: string): Promise<void>;
}

/** Counters the shim keeps and gauges of state, brought up to date before each scrape. */
const shimSeen = new WeakMap<FuseSession, { readBytes: number; writeBytes: number }>();
async function refreshGauges(m: Metrics, session: FuseSession, vfs: Vfs, copies: CopyCache | undefined, store: MetadataStore): Promise<void> {
  const io = session.ioCounters();
  const last = shimSeen.get(session) ?? { readBytes: 0, writeBytes: 0 };
  m.readBytes.inc({ source: "local" }, io.readBytes - last.readBytes);
  m.writtenBytes.inc(io.writeBytes - last.writeBytes);
  shimSeen.set(session, io);
  m.openFiles.set(vfs.openFiles);
  for (const u of copies?.usage() ?? []) {
    m.cacheBytes.set({ tier: u.tier }, u.bytes);
    m.cacheFiles.set({ tier: u.tier }, u.files);
    m.cacheLimit.set({ tier: u.tier }, u.limit);
  }
  const nodes = [...(await store.nodes()).values()];
  m.nodes.set({ state: "live" }, nodes.filter((n) => n.alive).length);
  m.nodes.set({ state: "expired" }, nodes.filter((n) => !n.alive).length);
}

/** Compose the layers: Redis (given or private) -> store -> start-up scan -> VFS -> FUSE mount. */
export async function runDaemon(cfg: DaemonConfig, log: Logger): Promise<Daemon> {
  const address = `${cfg.hostIp}:${cfg.port}`;
  const nodeId = nodeIdentity(join(cfg.rootPath, RESERVED_NAME));
  const nlog = log.child({ node: nodeId });
  setUnexpectedErrorLogger((err) => nlog.error({ err }, "unexpected error, reported as EIO"));

  fs.mkdirSync(cfg.rootPath, { recursive: true });
  const cleanups: (() => Promise<void>)[] = [];
  // Each step is bounded: a stop must finish even when Redis or the disk does not answer.
  const undo = async () => {
    for (const c of cleanups.reverse()) {
      const step = c().catch((e: unknown) => nlog.warn({ err: (e as Error).message }, "cleanup step failed"));
      await Promise.race([step, Bun.sleep(5000).then(() => nlog.warn("cleanup step timed out after 5 s"))]);
    }
  };

  try {
    const lock = lockRoot(join(cfg.rootPath, RESERVED_NAME), cfg.rootPath);
    cleanups.push(async () => lock.release());
    let embedded: EmbeddedRedis | undefined;
    let url = cfg.redisUrl;
    if (!url) {
      embedded = await startEmbeddedRedis(cfg.embeddedRedisDir);
      cleanups.push(() => embedded!.stop());
      url = embedded.url;
      nlog.info({ dir: cfg.embeddedRedisDir, pid: embedded.pid }, "no --redis_url given: started a private redis-server (single-node use; give -u to join a cluster)");
    }
    const m = cfg.metricsPort !== undefined ? createMetrics() : undefined;
    const rawStore = await createRedisStore({
      url,
      access: cfg.redisAccess,
      nodeId,
      onConnectionEvent: (ev, detail) => (ev === "error" ? nlog.error({ redis: redactUrl(url!), detail }, "Redis connection lost") : nlog.info({ redis: redactUrl(url!) }, "Redis connection back")),
    });
    cleanups.push(() => rawStore.close());
    const store: MetadataStore = m ? instrument(rawStore, m, (e) => e instanceof FsError && e.errno !== E.EIO) : rawStore;
    const rootSt = fs.statSync(cfg.rootPath);
    await store.init(rootSt.mode, rootSt.uid, rootSt.gid);
    const startedAt = Date.now();
    await store.registerNode({ id: nodeId, address, startedAt }, NODE_TTL_MS);
    cleanups.push(() => store.unregisterNode(nodeId));
    let copies: CopyCache | undefined;
    const beat = setInterval(() => store.heartbeat(nodeId, NODE_TTL_MS, { cache: copies?.usage() ?? [] }).catch((e: unknown) => nlog.warn({ err: (e as Error).message }, "heartbeat failed")), HEARTBEAT_MS);
    cleanups.push(async () => clearInterval(beat));

    // Renames and deletes of this node's files made elsewhere while it was down, before the scan
    // (which would otherwise publish deleted files again under their old names).
    // The VFS comes later: until it exists nothing is open.
    let vfs: Vfs | undefined;
    const todo = createTodoApplier({ rootPath: cfg.rootPath, nodeId, store, log: nlog, writing: (ino) => vfs?.writing(ino) ?? false });
    await todo.drain();
    const t0 = performance.now();
    const progress = createProgress("start-up scan: files under the root path", nlog, true);
    const scan = await scanRoot(cfg.rootPath, store, nodeId, nlog, !cfg.redisUrl, (n) => progress.update(n, 0));
    progress.stop();
    nlog.info({ ...scan, seconds: +((performance.now() - t0) / 1000).toFixed(2), root: cfg.rootPath }, "start-up scan done");

    // A sole node (private Redis) has no peers: it opens no port.
    let remote: RemoteData | undefined;
    if (cfg.redisUrl) {
      if (!cfg.clusterSecret && !cfg.peerTls) nlog.warn("--insecure: serving this node's files to anyone who can reach its port");
      // Per node: several nodes on one machine may share the cache directory.
      const cache = createCopyCache({
        dir: join(cfg.cacheDir, nodeId),
        ramBytes: cfg.ramCacheBytes,
        ramMaxFileBytes: cfg.ramCacheMaxFileBytes,
        diskBytes: cfg.diskCacheBytes,
        onEvict: (ino, version, tier) => {
          m?.cacheEvictions.inc({ tier });
          void store.dropCachedCopy(ino, nodeId, version).catch((e: unknown) => nlog.warn({ ino, err: (e as Error).message }, "could not unlist an evicted copy"));
        },
      });
      cleanups.push(async () => cache.close());
      const rpcObserver = (side: string) => observeRpcs((method, code, s) => {
        m?.rpcs.inc({ side, method, code });
        m?.rpcLatency.observe({ side, method }, s);
      });
      const pool = createPeerPool({ secret: cfg.clusterSecret, tls: cfg.peerTls, timeoutMs: 30_000, interceptors: m ? [rpcObserver("client")] : [] });
      cleanups.push(async () => pool.close());
      remote = createRemoteData({
        store, pool, cache, nodeId, startedAt, log: nlog,
        observe: m && { cache: (hit) => (hit ? m.cacheHits : m.cacheMisses).inc(), received: (n) => m.peerBytes.inc({ direction: "received" }, n) },
      });
      copies = cache;
      const server = await startPeerServer({
        rootPath: cfg.rootPath,
        port: cfg.port,
        host: cfg.listen,
        secret: cfg.clusterSecret,
        tls: cfg.peerTls,
        log: nlog,
        catchUp: () => todo.drain(),
        openCached: (ino, version) => cache.open(ino, version),
        holdsInRoot: (copies) => store.heldBy(nodeId, copies),
        interceptors: m ? [rpcObserver("server")] : [],
        onServed: m && ((n) => m.peerBytes.inc({ direction: "served" }, n)),
      });
      cleanups.push(() => server.close());
      // -p 0: the port the kernel picked is the one other nodes must dial.
      if (server.port !== cfg.port) await store.registerNode({ id: nodeId, address: `${cfg.hostIp}:${server.port}`, startedAt }, NODE_TTL_MS);
    }
    let session: FuseSession | undefined;
    vfs = createVfs({
      rootPath: cfg.rootPath, nodeId, store, log: nlog, attrCacheMs: cfg.attrTimeout * 1000, soleNode: !cfg.redisUrl, remote, catchUp: () => todo.drain(),
      refreshKernelAttrs: async (ino) => {
        if (!session) return;
        session.invalidateAttrs(ino);
        await session.flushInvalidations();
      },
      onIo: m && ((kind, n) => (kind === "read" ? m.readBytes.inc({ source: "memory" }, n) : m.writtenBytes.inc(n))),
    });
    cleanups.push(() => vfs.closeAll());
    const options = ["fsname=mcfs", "subtype=mcfs", "default_permissions"];
    if (cfg.allowOther) options.push("allow_other");
    await store.subscribe(
      (invs, ack) => {
        // Each kernel invalidation once per batch: a burst of creates in one directory names it thousands of times.
        const entries = new Map<string, [number, string]>();
        const inodes = new Set<number>();
        for (const inv of invs) {
          vfs.invalidate(inv);
          for (const [dir, name] of [...inv.removed, ...inv.added]) entries.set(`${dir}/${name}`, [dir, name]);
          for (const ino of inv.inodes) inodes.add(ino);
        }
        if (invs.some((inv) => inv.todo.includes(nodeId))) void todo.drain();
        if (!session) return ack?.();
        for (const [dir, name] of entries.values()) session.invalidateEntry(dir, name);
        for (const ino of inodes) session.invalidateInode(ino);
        // Acknowledged once the kernel has them, or after a few ms: an invalidation waits for the
        // directory's lock, which this node's own rename in that directory holds while it waits for
        // the other node's acknowledgement (two nodes renaming in one directory would stall each other).
        if (ack) void Promise.race([session.flushInvalidations(), Bun.sleep(ACK_FLUSH_MS)]).then(ack);
      },
      () => {
        nlog.warn("invalidation channel reconnected: dropping cached metadata");
        vfs.resync();
        void todo.drain();
      },
    );
    let resolveDone!: () => void;
    const done = new Promise<void>((r) => (resolveDone = r));
    let stopping: Promise<void> | undefined;
    const stop = (reason: string) => {
      stopping ??= (async () => {
        nlog.info({ reason, mount: cfg.mountPath }, "stopping");
        if (session) {
          try {
            await session.stop(5000);
          } catch (e) {
            nlog.error({ err: (e as Error).message }, "FUSE session did not stop cleanly");
          }
        }
        await undo();
        nlog.info({ mount: cfg.mountPath }, "stopped and unmounted");
        resolveDone();
      })();
      return stopping;
    };
    session = await startFuseSession(vfs, {
      mountPoint: cfg.mountPath,
      options,
      debug: cfg.debug,
      singleThread: cfg.singleThread,
      entryTimeout: cfg.entryTimeout,
      attrTimeout: cfg.attrTimeout,
      onOp: cfg.debug || m ? (op, s, errno, ino, name) => {
        if (cfg.debug) nlog.debug({ op, ino, ...(name ? { name } : {}), ms: +(s * 1000).toFixed(3), ...(errno ? { errno: errnoName(errno) } : {}) }, "fuse op");
        if (!m) return;
        m.fuseOps.inc({ op });
        m.fuseLatency.observe({ op }, s);
        if (errno) m.fuseErrors.inc({ op, errno: errnoName(errno) });
      } : undefined,
      onExit: () => void stop("mount went away"),
    });
    nlog.info({ mount: cfg.mountPath, root: cfg.rootPath, address, redis: redactUrl(url) }, "mounted");
    if (m && cfg.metricsPort !== undefined) {
      const live = session;
      const ms = await serveMetrics(m.registry, cfg.listen, cfg.metricsPort, nlog, () => refreshGauges(m, live, vfs, copies, store));
      cleanups.push(() => ms.close());
    }
    return { nodeId, done, stop };
  } catch (e) {
    await undo();
    throw e;
  }
}
