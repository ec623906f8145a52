import * as fs from "node:fs";
import { join } from "node:path";
import type { DaemonConfig } from "./config.ts";
import { lockRoot } from "./root-lock.ts";
import { nodeIdentity } from "./node-identity.ts";
import { startEmbeddedRedis, type EmbeddedRedis } from "./embedded-redis.ts";
import { createWatches } from "../vfs/open-watches.ts";
import { createSpaceReserve, type SpaceReserve } from "./space-reserve.ts";
import { scanRoot, type ScanResult } from "./startup-scan.ts";
import { openStore } from "../meta/open-store.ts";
import type { MetadataStore } from "../meta/store.ts";
import { createVfs, type Vfs } from "../vfs/vfs.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import { createRetiredFiles } from "../peer/retired-files.ts";
import { createRemoteData, type RemoteData } from "../vfs/remote-data.ts";
import { createCopyListing } from "../vfs/copy-listing.ts";
import { createCopyCache, type CopyCache } from "../cache/copy-cache.ts";
import { createMetrics, instrument, type Metrics } from "../metrics/metrics.ts";
import { observeRpcs } from "../metrics/rpc-interceptor.ts";
import { serveMetrics } from "../metrics/metrics-server.ts";
import { createProgress } from "../util/progress.ts";
import { createTodoApplier } from "../vfs/local-todo.ts";
import { IDENTITY, openLocalDir } from "../local/local-dir.ts";
import { createPathCache } from "../vfs/paths.ts";
import { linkLocal } from "../vfs/local-files.ts";
import { openPrivateDir } from "../local/private-dir.ts";
import { createRollbackGuard, type RedisCheck } from "./rollback-guard.ts";
import { redoLostDeletions } from "./lost-deletions.ts";
import { createDeletionJournal } from "../local/deletion-journal.ts";
import { startNodeReplicas, type NodeReplicas } from "./replicas.ts";
import { REPLICAS_SETTING } from "../replicas/replica-count.ts";
import { startPeerServer } from "../peer/peer-server.ts";
import { createBulkClient } from "../peer/bulk-client.ts";
import { createPeerPool } from "../peer/peer-client.ts";
import { createPeerReads } from "../peer/peer-reads.ts";
import { startFuseSession, type FuseSession } from "../fuse/session.ts";
import { prepareMountpoint } from "../fuse/mountpoint.ts";
import { FUSE_CONF, isRoot, userAllowOther } from "../fuse/fusermount.ts";
import { GRANTS_MAX } from "../fuse/abi.ts";
import { E, FsError, errnoName, redisDiskFull, setUnexpectedErrorLogger } from "../util/errno.ts";
import { redactUrl, type Logger } from "../util/log.ts";
import { openFileLimit } from "../util/fd-limit.ts";
import { freeBytes } from "../util/free-space.ts";
import { createRwLock } from "../util/rw-lock.ts";

const HEARTBEAT_MS = 5_000;
/**
 * Longest a node waits for its kernel to take another node's invalidations of names before it
 * acknowledges them while a change of its own waits for acknowledgements: the invalidation waits for
 * its directory's lock, which this node's own rename there may hold meanwhile.
 */
const ACK_FLUSH_MS = 5;
/** Longest it waits otherwise (no lock of its own in the way): below the 500 ms an origin waits. */
const ACK_SETTLE_MS = 250;
/**
 * Opens by names another node's change took race it only while the origin surely waits: heard less
 * than WATCH_PROOF_MS (350 ms) after it was published, of the origin's 500 ms, this leaves 50 ms for the ack.
 */
const RACED_MS = 100;
/** Longest an open waits for the kernel to drop names it may still hold of a renamed file (an open holds no directory lock). */
const FORGET_NAMES_MS = 1000;
/** Names and inodes a node's kernel is told to drop at once when it drops everything it holds (forgetAll). */
const FORGET_BATCH = 256;
const NODE_TTL_MS = 15_000;
/** How long the bytes of a file unlinked while read in ranges elsewhere stay after its last read. */
const UNLINKED_KEEP_MS = 5 * 60_000;
/** Room kept for the private Redis's appends on its disk: thousands of changes, removes among them. */
const REDIS_ROOM_BYTES = 8 << 20;

export interface Daemon {
  readonly nodeId: string;
  /** Resolves when the daemon has stopped (signal, or the mount was taken away). */
  readonly done: Promise<void>;
  stop(reason: string): Promise<void>;
  /** The process exits now, stopped or not (a second signal): its mount is lazily unmounted first. */
  exitingNow(): void;
}

/** Bytes free on the disk of the root path, for the heartbeat (replicas go to the least full nodes). */
function freeSpace(rootPath: string): { free?: number } {
  const free = freeBytes(rootPath);
  return free === undefined ? {} : { free };
}

/** Counters the shim keeps and gauges of state, brought up to date before each scrape. */
const shimSeen = new WeakMap<FuseSession, { readBytes: number; writeBytes: number; passthroughOpens: number; lookups: number; getattrs: number; absent: number; creates: number; truncates: number; opens: number; flushes: number }>();
const unreadSeen = new WeakMap<CopyCache, number>();
/** How long a scrape waits for Redis to count the nodes before it answers without. */
const NODES_SCRAPE_MS = 1_000;
async function refreshGauges(m: Metrics, session: FuseSession, vfs: Vfs, copies: CopyCache | undefined, store: MetadataStore): Promise<void> {
  const io = session.ioCounters();
  const lookups = session.shimLookups();
  const getattrs = session.shimGetattrs();
  const absent = session.shimAbsent();
  const creates = session.shimCreates();
  const truncates = session.shimTruncates();
  const opens = session.shimOpens();
  const flushes = session.flushRequests();
  const last = shimSeen.get(session) ?? { readBytes: 0, writeBytes: 0, passthroughOpens: 0, lookups: 0, getattrs: 0, absent: 0, creates: 0, truncates: 0, opens: 0, flushes: 0 };
  m.readBytes.inc({ source: "local" }, io.readBytes - last.readBytes);
  m.writtenBytes.inc(io.writeBytes - last.writeBytes);
  m.shimLookups.inc(lookups - last.lookups);
  m.shimGetattrs.inc(getattrs - last.getattrs);
  m.shimAbsent.inc(absent - last.absent);
  m.shimCreates.inc(creates - last.creates);
  m.shimTruncates.inc(truncates - last.truncates);
  m.shimOpens.inc(opens - last.opens);
  m.fuseFlushes.inc(flushes - last.flushes);
  m.fuseKillPrivileges.set(session.killPrivileges() ? 1 : 0);
  m.fusePassthrough.set(session.passthrough() ? 1 : 0);
  m.passthroughOpens.inc(io.passthroughOpens - last.passthroughOpens);
  shimSeen.set(session, { ...io, lookups, getattrs, absent, creates, truncates, opens, flushes });
  m.openFiles.set(vfs.openFiles);
  if (copies) {
    const unread = copies.ahead().evictedUnread;
    m.readAheadUnused.inc(unread - (unreadSeen.get(copies) ?? 0));
    unreadSeen.set(copies, unread);
  }
  for (const u of copies?.usage() ?? []) {
    m.cacheBytes.set({ tier: u.tier }, u.bytes);
    m.cacheFiles.set({ tier: u.tier }, u.files);
    m.cacheLimit.set({ tier: u.tier }, u.limit);
  }
  // Redis out of reach or stalled: the scrape still answers (the errors are in mcfs_redis_operation_errors_total), with the last counts.
  const nodes = await Promise.race([store.nodes().catch(() => undefined), Bun.sleep(NODES_SCRAPE_MS).then(() => undefined)]);
  if (!nodes) return;
  m.nodes.set({ state: "live" }, [...nodes.values()].filter((n) => n.alive).length);
  m.nodes.set({ state: "expired" }, [...nodes.values()].filter((n) => !n.alive).length);
}

/**
 * Whether to mount with allow_other: as asked, or (not asked) wherever fusermount3 permits it to this
 * user. Asking for what cannot be had is an error before anything starts, not a failed mount later.
 */
function decideAllowOther(asked: boolean | undefined, log: Logger): boolean {
  const permitted = isRoot() || userAllowOther();
  if (asked === true && !permitted) throw new Error(`--allow-other: uid ${process.geteuid?.()} may not mount with allow_other, ${FUSE_CONF} has no user_allow_other line (add it as root, or run without --allow-other)`);
  if (asked === undefined && !permitted) log.info({ uid: process.geteuid?.(), conf: FUSE_CONF }, `mounting without allow_other: only this user can use the mount (${FUSE_CONF} has no user_allow_other line)`);
  return asked ?? permitted;
}

/** Compose the layers: Redis (given or private) -> store -> start-up scan -> VFS -> FUSE mount. */
export async function runDaemon(cfg: DaemonConfig, log: Logger): Promise<Daemon> {
  const address = `${cfg.hostIp}:${cfg.port}`;
  const nodeId = nodeIdentity(join(cfg.rootPath, RESERVED_NAME));
  const nlog = log.child({ node: nodeId });
  setUnexpectedErrorLogger((err) => nlog.error({ err }, "unexpected error, reported as EIO"));

  const allowOther = decideAllowOther(cfg.allowOther, nlog);
  fs.mkdirSync(cfg.rootPath, { recursive: true });
  const cleanups: (() => Promise<void>)[] = [];
  let madeMountPoint = false;
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
    if (lock.freed) nlog.warn({ root: cfg.rootPath, pid: lock.freed.pid, connection: lock.freed.connection }, "the daemon before was killed while the kernel held it in its FUSE connection (a request waiting for it held a directory the kernel was dropping a name in): that connection was aborted so it could die; the requests left in it failed with ECONNABORTED");
    // Every local operation from here on is confined beneath this fd of the root path.
    const root = openLocalDir(cfg.rootPath);
    cleanups.push(async () => root.close());
    // Only root may reach the bytes directly: users go through the mount, where the namespace's
    // owners and modes are checked (a chmod made on another node never reaches this disk's copy).
    const given = fs.statSync(cfg.rootPath);
    if (given.mode & 0o077) {
      fs.chmodSync(cfg.rootPath, given.mode & 0o7700);
      nlog.info({ root: cfg.rootPath, was: (given.mode & 0o7777).toString(8) }, "root path closed to other users (0700): they use the mount");
    }
    // Checked before anything is registered: a start refused here leaves nothing behind.
    const cacheDir = cfg.redisUrl ? openPrivateDir(cfg.cacheDir, nodeId) : undefined;
    if (cacheDir) cleanups.push(async () => cacheDir.close());
    // A start that fails later takes back the directory it made here: nothing half-done is left.
    if (prepareMountpoint(cfg.mountPath, cfg.nonempty).made) madeMountPoint = true;
    let embedded: EmbeddedRedis | undefined;
    let reserve: SpaceReserve | undefined;
    let spaceFloor = 0;
    let session: FuseSession | undefined;
    let url = cfg.redisUrl;
    if (!url) {
      embedded = await startEmbeddedRedis(cfg.embeddedRedisDir, {
        onRestart: ({ code, signal, pid, err }) =>
          pid !== undefined
            ? nlog.error({ dir: cfg.embeddedRedisDir, code, signal, pid }, "the private redis-server exited: started it again (what it lost is checked for and repaired)")
            : nlog.error({ dir: cfg.embeddedRedisDir, code, signal, err }, "the private redis-server exited and could not be started again: trying again"),
      });
      cleanups.push(() => embedded!.stop());
      url = embedded.url;
      // On the disk of the files, the room given back is Redis's: writes leave half of it free until it is kept again.
      const shared = fs.statSync(cfg.embeddedRedisDir).dev === fs.statSync(cfg.rootPath).dev;
      const kept = createSpaceReserve(cfg.embeddedRedisDir, REDIS_ROOM_BYTES, nlog, (held) => {
        spaceFloor = held || !shared ? 0 : REDIS_ROOM_BYTES / 2;
        session?.spaceFloor(spaceFloor);
      });
      cleanups.push(async () => kept.stop());
      reserve = kept;
      nlog.info({ dir: cfg.embeddedRedisDir, pid: embedded.pid }, "no --redis_url given: started a private redis-server (single-node use; give -u to join a cluster)");
    }
    const m = cfg.metricsPort !== undefined ? createMetrics() : undefined;
    const rawStore = await openStore({
      url,
      access: cfg.redisAccess,
      nodeId,
      alone: !cfg.redisUrl,
      makeRoom: reserve && (() => reserve.release()),
      onConnectionEvent: (ev, detail) => (ev === "error" ? nlog.error({ redis: redactUrl(url!), detail }, "Redis connection lost") : nlog.info({ redis: redactUrl(url!) }, "Redis connection back")),
      onSlowNodes: (ev, nodes) =>
        ev === "unresponsive"
          ? nlog.warn({ nodes }, "nodes did not acknowledge a change in time: not waited for until they answer again")
          : ev === "late watchers"
            ? nlog.warn({ nodes }, "nodes watching a file did not acknowledge its new version in time: it went on without them")
            : nlog.info({ nodes }, "nodes acknowledge changes again"),
    });
    cleanups.push(() => rawStore.close());
    const store: MetadataStore = m ? instrument(rawStore, m, (e) => e instanceof FsError && e.errno !== E.EIO) : rawStore;
    if (cfg.requireNamespace) {
      const root = await store.getMany([1]);
      if (!root[0]) throw new Error(`there is no filesystem at ${redactUrl(url!)} and --require-namespace forbids making one`);
    }
    // The namespace's root takes --root-mode, not the disk's 0700: that would lock users out of the mount.
    await store.init(cfg.rootMode, given.uid, given.gid);
    if (cfg.replicas !== undefined && cfg.redisUrl) {
      const was = await store.setting(REPLICAS_SETTING);
      await store.setSetting(REPLICAS_SETTING, String(cfg.replicas));
      if (was !== String(cfg.replicas)) nlog.info({ replicas: cfg.replicas, was: was ?? "1 (never set)" }, "cluster-wide replica count set");
    }
    const startedAt = Date.now();
    // The VFS and the mount (session, above) come later: until they exist nothing is open.
    let vfs: Vfs | undefined;
    // Only other nodes read in ranges: a sole node keeps nothing.
    const retired = cfg.redisUrl ? createRetiredFiles({ root, keepMs: UNLINKED_KEEP_MS, log: nlog }) : undefined;
    if (retired) cleanups.push(async () => retired.close());
    // One lock for the local directories: creates here, and renames from here or applied from other nodes.
    const localDirs = createRwLock();
    // Deletions acted on here, so that one Redis loses afterwards is made again (redoLostDeletions).
    const journal = createDeletionJournal(join(cfg.rootPath, RESERVED_NAME, "deleted-files"));
    cleanups.push(async () => journal.close());
    const deleting = (ino: number, version: number) => void journal.note(ino, version).catch((e: unknown) => nlog.warn({ ino, err: (e as Error).message }, "could not note a deletion in the journal: were Redis to lose it, the name would come back without its bytes"));
    const todo = createTodoApplier({
      root, nodeId, store, log: nlog, writing: (ino) => vfs?.writing(ino) ?? false, retire: retired?.retire, deleting, localDirs,
      asked: () => vfs?.store ?? store, movedDirs: () => vfs?.forgetPaths(),
    });
    let copies: CopyCache | undefined;
    // The peer port is bound before the node is registered: a port in use (or any failure before
    // this point) leaves no record naming an address this node never served on.
    let peerPort = cfg.port;
    // A sole node (private Redis) has no peers: it opens no port.
    let remote: RemoteData | undefined;
    // One set of watches for the VFS's opens and the read-ahead's record reads.
    const watches = createWatches();
    if (cfg.redisUrl) {
      if (!cfg.clusterSecret && !cfg.peerTls) nlog.warn("--insecure: serving this node's files to anyone who can reach its port");
      // Per node: several nodes on one machine may share the cache directory.
      const listing = createCopyListing({ store, nodeId, startedAt, log: nlog });
      const cache = createCopyCache({
        dir: cacheDir!,
        ramBytes: cfg.ramCacheBytes,
        ramMaxFileBytes: cfg.ramCacheMaxFileBytes,
        // Half the process's files: the other half is for open handles (each reader of a copy has its own fd), sockets and the rest.
        ramMaxFiles: Math.floor(openFileLimit() / 2),
        diskBytes: cfg.diskCacheBytes,
        onEvict: (ino, version, tier) => {
          // A grant's dup would keep the copy: the next open goes to JS.
          vfs?.copyGone(ino);
          m?.cacheEvictions.inc({ tier });
          listing.evicted(ino, version);
        },
        onDemote: (ino, failed) => {
          // A grant's dup would keep the RAM copy's memory: opens go to JS, which opens the disk copy.
          vfs?.copyGone(ino);
          m?.cacheDemotions.inc({ result: failed ? "failed" : "moved" });
        },
      });
      cleanups.push(async () => cache.close());
      const rpcSeen = (side: string) => (method: string, code: string, s: number) => {
        m?.rpcs.inc({ side, method, code });
        m?.rpcLatency.observe({ side, method }, s);
      };
      const rpcObserver = (side: string) => observeRpcs(rpcSeen(side));
      const pool = createPeerPool({ secret: cfg.clusterSecret, tls: cfg.peerTls, timeoutMs: 30_000, interceptors: m ? [rpcObserver("client")] : [] });
      cleanups.push(async () => pool.close());
      const bulkObserver = (side: string) => (errno: number, s: number) => rpcSeen(side)("BulkRead", errno ? errnoName(errno) : "OK", s);
      // The bulk lane is plain text: with TLS every byte goes over gRPC.
      const bulk = cfg.peerTls ? undefined : createBulkClient({ ...(cfg.clusterSecret === undefined ? {} : { secret: cfg.clusterSecret }), timeoutMs: 30_000, ...(m ? { observe: bulkObserver("client") } : {}) });
      if (bulk) cleanups.push(async () => bulk.close());
      /** When the live node at address started: a holder that refused may be back already. */
      const runAt = async (address: string) => {
        for (const n of (await store.nodes()).values()) if (n.alive && n.address === address) return n.startedAt;
        return undefined;
      };
      remote = createRemoteData({
        root, store, peers: createPeerReads(pool, bulk, runAt), cache, nodeId, listing, log: nlog, watches,
        landed: (ino, version) => vfs?.copyLanded(ino, version),
        observe: m && { cache: (hit) => (hit ? m.cacheHits : m.cacheMisses).inc(), received: (n) => m.peerBytes.inc({ direction: "received" }, n) },
      });
      copies = cache;
      const server = await startPeerServer({
        root,
        port: cfg.port,
        host: cfg.listen,
        secret: cfg.clusterSecret,
        tls: cfg.peerTls,
        log: nlog,
        catchUp: () => todo.drain(),
        currentPath: (ino) => createPathCache(store).pathOf(ino),
        openCached: (ino, version) => cache.open(ino, version),
        holdsInRoot: (copies) => store.heldBy(nodeId, copies),
        retired,
        // Before the vfs exists nothing writes the root: every read is of steady bytes. A writer's
        // release the shim answered is taken in first: its close returned, its bytes are published.
        steady: (ino, version, asWritten) => {
          session?.takeQueued();
          return vfs?.steady(ino, version, asWritten) ?? (() => vfs === undefined);
        },
        liveSize: (ino, version, asWritten) => vfs?.liveSize(ino, version, asWritten),
        interceptors: m ? [rpcObserver("server")] : [],
        ...(m ? { observeBulk: bulkObserver("server") } : {}),
        onServed: m && ((n) => m.peerBytes.inc({ direction: "served" }, n)),
      });
      cleanups.push(() => server.close());
      // -p 0: the port the kernel picked is the one other nodes must dial.
      peerPort = server.port;
    }
    const previous = await store.registerNode({ id: nodeId, address: `${cfg.hostIp}:${peerPort}`, startedAt, watches: true }, NODE_TTL_MS);
    // A start that fails from here on puts back what it replaced; a started node leaves as a known node.
    let started = false;
    cleanups.push(() => (started ? store.unregisterNode(nodeId) : store.withdrawNode(nodeId, previous)));
    // Redis going backwards (restored from an older copy, its last second lost) is noticed at start
    // and at every heartbeat; then what this node holds is published again (see afterRollback).
    const guard = createRollbackGuard({ store, markFile: join(cfg.rootPath, RESERVED_NAME, "inode-high-water"), log: nlog });
    const atStart = await guard.check();
    /** closing: a file whose close found its record gone (not deleted): published again though still open. */
    let afterRollback: (how: RedisCheck | "lost", closing?: number) => Promise<void> = async () => {};
    // A check that found writes lost is owed its repair until one runs to the end: the guard tells
    // of a restart once, and a repair Redis refuses half-way (out of memory, a second failover) would
    // leave what it lost lost for good.
    let owed: RedisCheck | undefined;
    let repairing = false;
    const checkRedis = async () => {
      const how = await guard.check();
      if (how !== "ok" && owed !== "behind") owed = how;
      if (!owed || repairing) return;
      const doing = owed;
      owed = undefined;
      repairing = true;
      try {
        await afterRollback(doing);
      } catch (e) {
        if (owed !== "behind") owed = doing;
        nlog.error({ err: (e as Error).message }, "checking what Redis kept of this node's files failed: trying again at the next heartbeat");
      } finally {
        repairing = false;
      }
    };
    /** checkRedis from a timer or an event: a failure is logged, and the next heartbeat checks again. */
    const checkRedisNow = () => void checkRedis().catch((e: unknown) => nlog.warn({ err: (e as Error).message }, "checking Redis for lost writes failed"));
    const beat = setInterval(() => {
      store.heartbeat(nodeId, NODE_TTL_MS, { cache: copies?.usage() ?? [], ...freeSpace(cfg.rootPath) }).catch((e: unknown) => nlog.warn({ err: (e as Error).message }, "heartbeat failed"));
      checkRedisNow();
      // Changes queued for this node whose notice never came (their node died right after queueing
      // them); not while the start-up scan walks the disk.
      if (started) void todo.drain();
    }, HEARTBEAT_MS);
    cleanups.push(async () => clearInterval(beat));

    // Renames and deletes of this node's files made elsewhere while it was down, before the scan
    // (which would otherwise publish deleted files again under their old names).
    await todo.drain();
    const t0 = performance.now();
    const progress = createProgress("start-up scan: files under the root path", nlog, true);
    // What becomes at start of a kept file the namespace lacks (see scanRoot's lost).
    const lostAtStart = atStart === "behind" || !cfg.redisUrl ? "republish" : "set-aside";
    const scan = await scanRoot(root, store, nodeId, nlog, lostAtStart, { onProgress: (n) => progress.update(n, 0) });
    progress.stop();
    nlog.info({ ...scan, seconds: +((performance.now() - t0) / 1000).toFixed(2), root: cfg.rootPath }, "start-up scan done");

    let replicas: NodeReplicas | undefined;
    if (remote) {
      replicas = startNodeReplicas({ store, nodeId, root, log: nlog, remote, graceMs: cfg.replicaGraceMs, checkMs: cfg.replicaCheckMs, writing: (ino) => vfs?.writing(ino) ?? false, metrics: m,
        linkLocal: (from, to) => linkLocal(root, from, to, nlog) });
      cleanups.push(() => replicas!.close());
    }
    vfs = createVfs({
      root, nodeId, store, log: nlog, attrCacheMs: cfg.attrTimeout * 1000, remote, catchUp: () => todo.drain(), applying: () => todo.applying(), applied: () => todo.applied(), localDirs, retire: retired?.retire, deleting, watches,
      ...(m ? { watchedOpen: () => m.watchedOpens.inc() } : {}),
      roomFor: (bytes) => spaceFloor === 0 || (freeBytes(cfg.rootPath) ?? Infinity) >= spaceFloor + bytes,
      dropKernelEntry: (parent, name) => session?.invalidateEntry(parent, name),
      forgetKernelNames: async (names) => {
        if (!session) return true;
        session.invalidateMany(names, []);
        return Promise.race([session.flushInvalidations().then(() => true), Bun.sleep(FORGET_NAMES_MS).then(() => false)]);
      },
      shimEntries: {
        keep: (parent, named, ttlMs) => session?.entries.keep(parent, named, ttlMs),
        keepAttrs: (attrs, ttlMs) => session?.entries.keepAttrs(attrs, ttlMs),
        drop: (parent, name) => session?.entries.drop(parent, name),
        dropInode: (ino) => session?.entries.dropInode(ino),
        dropDir: (dir) => session?.entries.dropDir(dir),
        dropAll: () => session?.entries.dropAll(),
        list: (dir, names) => session?.entries.list(dir, names),
        listName: (dir, name, present) => session?.entries.listName(dir, name, present),
        unlist: (dir) => session?.entries.unlist(dir),
        unlistAll: () => session?.entries.unlistAll(),
        trustFor: (ms) => session?.entries.trustFor(ms),
      },
      shimCreates: {
        supply: (kits) => session?.creates.supply(kits) ?? 0,
        makeHere: (dir, dirFd, mode, gid, made) => {
          if (session) return session.creates.makeHere(dir, dirFd, mode, gid, made);
          if (dirFd >= 0) fs.closeSync(dirFd);
          return false;
        },
        elsewhere: (dir) => session?.creates.elsewhere(dir),
      },
      shimGrants: {
        // An eighth of the process's files: copies take half (each one fd), handles and sockets the rest.
        limit: Math.min(GRANTS_MAX, Math.floor(openFileLimit() / 8)),
        grant: (ino, fd, id, version, size, copy, fresh) => session?.grants.grant(ino, fd, id, version, size, copy, fresh) ?? false,
        settle: (ino, id) => session?.grants.settle(ino, id),
        revoke: (ino) => session?.grants.revoke(ino),
        clear: () => session?.grants.clear(),
        supply: (fhs) => session?.grants.supply(fhs),
      },
      takeShimNotes: () => session?.takeQueued(),
      dropKernelInode: (ino) => session?.invalidateMany([], [ino]),
      entryAnswering: (ino) => session?.entryAnswering(ino),
      privileged: (ino, path) => {
        if (!session) return;
        session.markPrivileged(ino);
        // A writer in passthrough writes unseen: the kernel takes the bits itself at its next write,
        // once it has the file's new mode (a getattr, which also clears its "no privileges" mark).
        if (path !== undefined && session.passthrough()) {
          void session.flushInvalidations().then(() => fs.promises.stat(join(cfg.mountPath, path))).catch(() => {});
        }
      },
      detachHandle: (fh) => session?.detach(fh),
      handleWritten: (fh) => session?.written(fh) ?? false,
      followHandle: (fh, fd, bytes, whole) => session?.follow(fh, fd, bytes, whole),
      dirtyHandle: (fh) => session?.markDirty(fh),
      refreshKernelAttrs: async (ino) => {
        if (!session) return;
        session.invalidateAttrs(ino);
        await session.flushInvalidations();
      },
      recordLost: (ino) => afterRollback("lost", ino),
      onIo: m && ((kind, n) => (kind === "read" ? m.readBytes.inc({ source: "memory" }, n) : m.writtenBytes.inc(n))),
      ...(replicas ? { published: replicas.published, xattrSetting: replicas.xattrSetting } : {}),
    });
    cleanups.push(() => vfs.closeAll());
    /** Drop what this node and its kernel cache of the namespace: a change may have gone unheard. */
    const forgetAll = () => {
      vfs.resync();
      const { names, inodes } = vfs.takeKernelState();
      void (async () => {
        // A batch at a time, each once the one before reached the kernel: an invalidation a request
        // waits for (an open's refresh) is queued behind one batch, not behind every file the kernel
        // knows. Attributes only: an open of another version drops the pages (KernelView.opened).
        for (let i = 0; session && (i < names.length || i < inodes.length); i += FORGET_BATCH) {
          session.invalidateMany(names.slice(i, i + FORGET_BATCH), []);
          for (const ino of inodes.slice(i, i + FORGET_BATCH)) session.invalidateAttrs(ino);
          await session.flushInvalidations();
        }
      })();
    };
    /**
     * Deletions Redis lost, made again; then what this disk has under those names (a file or
     * directory made there since, which the scan before left for the name's file) is published.
     */
    const redoDeletions = async (scan: () => Promise<ScanResult>) => {
      const redone = await redoLostDeletions({ journal, store: vfs.store, root, nodeId, log: nlog, unlink: async (parent, name, only) => {
        await vfs.unlinkLost(parent, name, only);
        // Not the kernel's own unlink: it may hold the name still.
        session?.invalidateEntry(parent, name);
      } });
      if (redone) await scan();
    };
    // Before the mount: a deletion Redis lost in a power cut that stopped this node too.
    await redoDeletions(() => scanRoot(root, vfs.store, nodeId, nlog, lostAtStart));
    afterRollback = async (how, closing) => {
      if (how === "behind") {
        vfs.resync();
        copies?.dropAll();
      } else if (how === "lost") nlog.warn({ ino: closing }, "a file closed here has no record left, and nothing says it was deleted (Redis lost it): checking what Redis kept of this node's files");
      else nlog.warn("Redis restarted: checking that it kept what this node holds");
      // Changes queued for this node first: a file deleted elsewhere must not be published again.
      await todo.drain();
      // Through the filesystem's store: the creates it holds are in Redis before the scan asks.
      const scan = () => scanRoot(root, vfs.store, nodeId, nlog, "republish", { writing: (ino) => ino !== closing && vfs.writing(ino) });
      const again = await scan();
      // After the scan, as at start: files whose moves Redis lost are where it has them again.
      await redoDeletions(async () => {
        const more = await scan();
        again.published += more.published;
        again.repaired += more.repaired;
        return more;
      });
      if (!again.published && !again.repaired) return;
      nlog.error({ ...again }, "Redis had lost files this node holds: published them again from its disk");
      // Published again under new inode numbers: the names this node's kernel knows may lead to the old ones.
      forgetAll();
    };
    const options = [`fsname=${cfg.fsname}`, "subtype=mcfs", "default_permissions"];
    if (allowOther) options.push("allow_other");
    await store.subscribe(
      (invs, ack, waiting, awaited) => {
        // A file closed here whose release the shim answered is open no more: its change is not held back to a close that was.
        session?.takeNotes();
        // Each kernel invalidation once per batch: a burst of creates in one directory names it thousands of times.
        const entries = new Map<string, [number, string]>();
        const inodes = new Set<number>();
        /** Inodes named as the directory of a name: their attributes go on this thread (FuseSession.invalidateMany). */
        const dirs = new Set<number>();
        for (const inv of invs) {
          // Only what the kernel was given: other nodes' names and files this node never looked at cost nothing.
          for (const [dir, name] of [...inv.removed, ...inv.added]) {
            dirs.add(dir);
            if (vfs.kernelMayHaveEntry(dir, name)) entries.set(`${dir}/${name}`, [dir, name]);
          }
          for (const ino of inv.inodes) if (vfs.kernelChanged(ino)) inodes.add(ino);
        }
        const dirsNow = [...inodes].filter((ino) => dirs.has(ino));
        for (const ino of dirsNow) inodes.delete(ino);
        // The shim drops what it holds of these at once; then the caches here learn the change, and
        // may give the shim the new attributes (a directory another node created in), before the
        // kernel drops its own and asks again.
        // The disk follows the changes queued for this node first: until they are made, what is made
        // here by a path these caches learn now waits (VfsContext.makingAt).
        if (invs.some((inv) => inv.todo.includes(nodeId))) void todo.drain();
        // Opens by names the kernel holds race the changes until they return, which waits for this
        // node's ack: when the origin counts this node, and this feed is current enough that the
        // origin still waits (see WATCH_PROOF_MS). Otherwise the names are noted as taken.
        const racedUntil = performance.now() + RACED_MS;
        const races = !!ack && awaited && store.watchesHold();
        const marks = session && entries.size ? vfs.kernelRacing(invs, races ? racedUntil : undefined) : [];
        // A file open here keeps its attributes in the kernel until its close, but a new owner or
        // mode is dropped at once: once its record was read again, before the acknowledgement.
        const reread: Promise<void>[] = [];
        const learn = () => {
          for (const inv of invs) reread.push(vfs.invalidate(inv));
        };
        if (session && (entries.size || inodes.size || dirsNow.length)) session.invalidateMany(entries.values(), inodes, learn, dirsNow);
        else learn();
        if (!session) return ack?.();
        // Acknowledged once the kernel has them (a busy machine takes more than a few ms), no later
        // than the origin stops waiting; names, while a change of this node waits for acknowledgements
        // too, after a few ms: their invalidation waits for the directory's lock, which this node's
        // own rename there may hold meanwhile (two nodes renaming in one directory would stall each other).
        if (ack) {
          const s = session;
          const inTime = Promise.all(reread).then(() => s.flushInvalidations()).then(() => true);
          const bound = entries.size && waiting ? ACK_FLUSH_MS : ACK_SETTLE_MS;
          // Dropped by the kernel while the origin surely waited: the marks stand (they lapse otherwise, by the clock).
          if (marks.length) void inTime.then(() => performance.now() <= racedUntil && vfs.kernelSettled(marks));
          void Promise.race([inTime, Bun.sleep(bound).then(() => false)]).then((flushed) => {
            if (!flushed) vfs.kernelLate(marks);
            ack();
          });
        }
      },
      (why) => {
        if (why === "reconnected") {
          nlog.warn("invalidation channel reconnected: dropping cached metadata");
          // Redis may have restarted without its last writes: checked now, not at the next heartbeat,
          // so that what it lost is back (or gone again) within moments of its return.
          checkRedisNow();
        } else nlog.info("a node stopped or restarted (a change it made may not have been told): dropping cached metadata");
        forgetAll();
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
        if (session?.isMounted()) nlog.error({ mount: cfg.mountPath }, `stopped, but ${cfg.mountPath} is still mounted: unmount it with ${isRoot() ? "umount -l" : "fusermount3 -u -z"}`);
        else nlog.info({ mount: cfg.mountPath }, "stopped and unmounted");
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
      // A sole node's close publishes nothing another node waits for, and its store write is behind already.
      flushNotes: !remote,
      createsInShim: { reservedName: RESERVED_NAME, markName: IDENTITY, cluster: remote !== undefined },
      listingsExpire: remote !== undefined,
      onOp: cfg.debug || m ? (op, s, errno, ino, name) => {
        if (cfg.debug) nlog.debug({ op, ino, ...(name ? { name } : {}), ms: +(s * 1000).toFixed(3), ...(errno ? { errno: errnoName(errno) } : {}) }, "fuse op");
        if (!m) return;
        m.fuseOps.add(op);
        m.fuseLatency.observe(op, s);
        if (errno) m.fuseErrors.inc({ op, errno: errnoName(errno) });
      } : undefined,
      onExit: () => void stop("mount went away"),
    });
    session.spaceFloor(spaceFloor);
    if (session.connection >= 0) lock.mounted(session.connection);
    nlog.info({ mount: cfg.mountPath, root: cfg.rootPath, address, redis: redactUrl(url) }, "mounted");
    if (m && cfg.metricsPort !== undefined) {
      const live = session;
      const ms = await serveMetrics(m.registry, cfg.listen, cfg.metricsPort, nlog, () => refreshGauges(m, live, vfs, copies, store));
      cleanups.push(() => ms.close());
    }
    started = true;
    return { nodeId, done, stop, exitingNow: () => session?.unmountNow() };
  } catch (e) {
    await undo();
    if (madeMountPoint) {
      try {
        fs.rmdirSync(cfg.mountPath);
      } catch {
        // Not empty any more, or gone: not ours to remove then.
      }
    }
    if (redisDiskFull((e as Error)?.message ?? "")) throw new Error(`${cfg.redisUrl ? "Redis" : `the private Redis (in ${cfg.embeddedRedisDir})`} cannot write: its disk is full (${(e as Error).message}); free space there and start again`);
    throw e;
  }
}
