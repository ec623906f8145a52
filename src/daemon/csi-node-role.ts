import * as fs from "node:fs";
import { join } from "node:path";
import { spawn } from "bun";
import type { CsiNodeConfig } from "./csi-config.ts";
import type { Role } from "./csi-controller-role.ts";
import { connectRedis } from "../meta/redis-connect.ts";
import { createRedisVolumeRegistry } from "../csi/redis-volume-registry.ts";
import { createNodeService } from "../csi/node.ts";
import { mountAt } from "../csi/mounter.ts";
import { createVolumeBinder } from "../csi/volume-binder.ts";
import { createVolumeDaemons } from "../csi/volume-daemons.ts";
import { createSharedSources, MCFS_FSTYPE, sharedVolumeOf, volumeFsname, type VolumeSources } from "../csi/volume-source.ts";
import { clusterPrefix, isClusterUrl, parseClusterUrl, withClusterTag } from "../meta/redis-cluster.ts";
import { dropFilesystem, onFilesystem } from "../csi/volume-tags.ts";
import { createIdentityService } from "../csi/identity.ts";
import { createLinuxMounter } from "../csi/linux-mounter.ts";
import { createMountKeeper } from "../csi/mount-keeper.ts";
import { serveCsi } from "../csi/server.ts";
import { csiMetrics } from "./csi-metrics.ts";
import { redactUrl, type Logger } from "../util/log.ts";

const REPORT_MS = 30_000;
/** RAM tier of each volume's own daemon: a node may serve many volumes, and pays it per volume (the pod's memory limit). */
const VOLUME_RAM_CACHE_MIB = 64;

/** This program again: the compiled binary, or bun running the entry script. */
function self(): string[] {
  return Bun.main.startsWith("/$bunfs/") ? [process.execPath] : [process.execPath, Bun.main];
}

/**
 * The node plugin: publishes volumes by bind-mounting directories of the node-level mount, keeps
 * that mount alive (starting the node daemon unless it runs in its own container) and repairs the
 * pods' bind mounts when it comes back.
 */
export async function runCsiNode(cfg: CsiNodeConfig, log: Logger): Promise<Role> {
  const nlog = log.child({ role: "csi-node", node: cfg.nodeId });
  const cluster = isClusterUrl(cfg.redisUrl);
  if (cluster && cfg.skipNodeMount) throw new Error("SKIP_NODE_MOUNT=true does not go with a Redis Cluster: there each volume has a daemon of its own, which this plugin starts");
  const registry = createRedisVolumeRegistry(
    await connectRedis({ url: cfg.redisUrl, ...cfg.redisAccess }, (ev, detail) => (ev === "error" ? nlog.error({ redis: redactUrl(cfg.redisUrl), detail }, "Redis connection lost") : nlog.info("Redis connection back"))),
    cluster ? clusterPrefix(cfg.redisUrl) : "",
  );
  const mounter = createLinuxMounter();
  const [host, port] = [cfg.nodeUrl.replace(/:\d+$/, ""), /:(\d+)$/.exec(cfg.nodeUrl)?.[1] ?? "5000"];

  /**
   * Start a daemon in its own session: it outlives this process, so a restart of the plugin leaves
   * the pods' mounts alone. Resolves once it has mounted at mount.
   */
  async function startDaemon(mount: string, args: string[], env: Record<string, string | undefined> = process.env): Promise<void> {
    const child = spawn([...self(), "daemon", "-f", mount, ...args, ...cfg.daemonArgs], { stdio: ["ignore", "inherit", "inherit"], detached: true, env });
    child.unref();
    nlog.info({ pid: child.pid, mount }, "started a daemon");
    for (let i = 0; i < 600; i++) {
      if (child.exitCode !== null) throw new Error(`the daemon exited with code ${child.exitCode}`);
      if (mountAt(mounter, mount)?.fstype === MCFS_FSTYPE && fs.existsSync(mount)) return;
      await Bun.sleep(100);
    }
    throw new Error("the daemon did not mount within 60 s");
  }

  const binder = createVolumeBinder({ podsDir: cfg.podsDir, mounter, log: nlog });
  let sources: VolumeSources, healthy: () => boolean, stopChecks: () => void;
  if (cluster) {
    // Each volume's copy cache beside the others, never shared: two daemons would evict each other's files.
    const cacheBase = process.env.MULTICLOUD_FS_DISK_CACHE;
    const { MULTICLOUD_FS_DISK_CACHE: _, ...env } = process.env;
    const daemons = createVolumeDaemons({
      rootDir: cfg.rootDir,
      mountDir: cfg.mountPoint,
      podsDir: cfg.podsDir,
      registry,
      mounter,
      binder,
      start: (d) =>
        startDaemon(d.mount, ["-r", d.root, "-u", withClusterTag(cfg.redisUrl, d.tag), "-i", host, "-p", "0", "--fsname", volumeFsname(d.id), "--require-namespace", "--ram-cache-mib", String(VOLUME_RAM_CACHE_MIB), ...(cacheBase ? ["--cache-dir", join(cacheBase, d.tag)] : [])], env),
      forget: (tag) => cacheBase && fs.rmSync(join(cacheBase, tag), { recursive: true, force: true }),
      dropKeys: (tag) => onFilesystem(cfg.redisUrl, cfg.redisAccess, tag, (c) => dropFilesystem(c, tag)),
      base: parseClusterUrl(cfg.redisUrl).tag,
      log: nlog,
    });
    let running: Promise<void> | undefined;
    const check = () => (running ??= daemons.check().finally(() => (running = undefined)));
    await check();
    const timer = setInterval(() => void check(), cfg.checkIntervalMs);
    [sources, healthy, stopChecks] = [daemons, daemons.healthy, () => clearInterval(timer)];
  } else {
    const start = async () => {
      fs.mkdirSync(cfg.rootDir, { recursive: true });
      await startDaemon(cfg.mountPoint, ["-r", cfg.rootDir, "-u", cfg.redisUrl, "-i", host, "-p", port]);
    };
    const keeper = createMountKeeper({ mountPoint: cfg.mountPoint, mounter, binder, sourceOf: (e) => sharedVolumeOf(cfg.mountPoint, e), startDaemon: cfg.skipNodeMount ? undefined : start, intervalMs: cfg.checkIntervalMs, log: nlog });
    await keeper.check();
    [sources, healthy, stopChecks] = [createSharedSources(cfg.mountPoint), keeper.healthy, keeper.stop];
  }
  // Pods' binds from before every bind was nosuid,nodev keep running: close that hole without a restart of the pods.
  binder.tightenAll();

  const report = async () => {
    try {
      const st = fs.statfsSync(fs.existsSync(cfg.rootDir) ? cfg.rootDir : "/");
      await registry.reportNode(cfg.nodeId, { free: st.bavail * st.bsize, total: st.blocks * st.bsize, at: Date.now() });
    } catch (e) {
      nlog.warn({ err: (e as Error).message }, "could not report this node's capacity");
    }
  };
  await report();
  const reporter = setInterval(() => void report(), REPORT_MS);

  const metrics = await csiMetrics(cfg.metricsPort, cfg.metricsListen, nlog);
  const server = await serveCsi(
    cfg.endpoint,
    {
      identity: createIdentityService({ version: cfg.version, ready: async () => healthy() && (await registry.ping()), log: nlog }),
      node: createNodeService({ nodeId: cfg.nodeId, sources, binder, log: nlog }),
    },
    nlog,
    metrics.interceptors,
  );
  return {
    async stop() {
      // The daemons and the pods' mounts stay: they do not depend on this process.
      clearInterval(reporter);
      stopChecks();
      await server.close();
      await metrics.close();
      await registry.close();
    },
  };
}
