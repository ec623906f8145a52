import * as fs from "node:fs";
import { spawn } from "bun";
import type { CsiNodeConfig } from "./csi-config.ts";
import type { Role } from "./csi-controller-role.ts";
import { connectRedis } from "../meta/redis-connect.ts";
import { createRedisVolumeRegistry } from "../csi/redis-volume-registry.ts";
import { createNodeService } from "../csi/node.ts";
import { mountAt } from "../csi/mounter.ts";
import { createVolumeBinder, MCFS_FSTYPE } from "../csi/volume-binder.ts";
import { createIdentityService } from "../csi/identity.ts";
import { createLinuxMounter } from "../csi/linux-mounter.ts";
import { createMountKeeper } from "../csi/mount-keeper.ts";
import { serveCsi } from "../csi/server.ts";
import { csiMetrics } from "./csi-metrics.ts";
import { redactUrl, type Logger } from "../util/log.ts";

const REPORT_MS = 30_000;

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
  const registry = createRedisVolumeRegistry(
    await connectRedis({ url: cfg.redisUrl, ...cfg.redisAccess }, (ev, detail) => (ev === "error" ? nlog.error({ redis: redactUrl(cfg.redisUrl), detail }, "Redis connection lost") : nlog.info("Redis connection back"))),
  );
  const mounter = createLinuxMounter();
  const [host, port] = [cfg.nodeUrl.replace(/:\d+$/, ""), /:(\d+)$/.exec(cfg.nodeUrl)?.[1] ?? "5000"];

  /**
   * Start the node daemon in its own session: it outlives this process, so a restart of the plugin
   * leaves the pods' mounts alone. Resolves once the mount is live.
   */
  async function startDaemon(): Promise<void> {
    fs.mkdirSync(cfg.rootDir, { recursive: true });
    const args = [...self(), "daemon", "-f", cfg.mountPoint, "-r", cfg.rootDir, "-u", cfg.redisUrl, "-i", host, "-p", port, ...cfg.daemonArgs];
    const child = spawn(args, { stdio: ["ignore", "inherit", "inherit"], detached: true });
    child.unref();
    nlog.info({ pid: child.pid, mount: cfg.mountPoint, root: cfg.rootDir, address: cfg.nodeUrl }, "started the node daemon");
    for (let i = 0; i < 600; i++) {
      if (child.exitCode !== null) throw new Error(`node daemon exited with code ${child.exitCode}`);
      if (mountAt(mounter, cfg.mountPoint)?.fstype === MCFS_FSTYPE && fs.existsSync(cfg.mountPoint)) return;
      await Bun.sleep(100);
    }
    throw new Error("node daemon did not mount within 60 s");
  }

  const binder = createVolumeBinder({ podsDir: cfg.podsDir, mountPoint: cfg.mountPoint, mounter, log: nlog });
  const keeper = createMountKeeper({ mountPoint: cfg.mountPoint, mounter, binder, startDaemon: cfg.skipNodeMount ? undefined : startDaemon, intervalMs: cfg.checkIntervalMs, log: nlog });
  await keeper.check();
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
      identity: createIdentityService({ version: cfg.version, ready: async () => keeper.healthy() && (await registry.ping()), log: nlog }),
      node: createNodeService({ nodeId: cfg.nodeId, mountPoint: cfg.mountPoint, binder, log: nlog }),
    },
    nlog,
    metrics.interceptors,
  );
  return {
    async stop() {
      // The node daemon and the pods' mounts stay: they do not depend on this process.
      clearInterval(reporter);
      keeper.stop();
      await server.close();
      await metrics.close();
      await registry.close();
    },
  };
}
