#!/usr/bin/env bun
import yargs from "yargs";
import { daemonConfig, daemonOptions } from "./daemon-command.ts";
import { applyRuntimeSettings } from "./runtime-settings.ts";
import { runDaemon } from "../daemon/daemon.ts";
import { createLogger, type Logger, type LogFormat } from "../util/log.ts";
import { statusMain, statusOptions } from "./status-command.ts";
import { fsckMain, fsckOptions } from "./fsck-command.ts";
import { nodeForgetMain, nodeForgetOptions } from "./node-command.ts";
import { repairMain, repairOptions } from "./repair-command.ts";
import { csiConfig, csiNodeConfig, csiNodeOptions, csiOptions } from "./csi-command.ts";
import { runCsiController, type Role } from "../daemon/csi-controller-role.ts";
import { runCsiNode } from "../daemon/csi-node-role.ts";
import pkg from "../../package.json" with { type: "json" };

async function daemonMain(argv: Parameters<typeof daemonConfig>[0]) {
  // First: nothing is read (a secret from a pipe, say) before the run that stays.
  applyRuntimeSettings();
  let cfg;
  try {
    cfg = daemonConfig(argv, process.env);
  } catch (e) {
    process.stderr.write(`mcfs: ${(e as Error).message}\n`);
    process.exit(2);
  }
  const log = createLogger({ debug: cfg.debug, format: cfg.logFormat });
  // Caught from the start: a signal while the daemon starts (after it mounted, say) must still
  // unmount, not kill the process and leave a dead mount behind. It stops once started.
  let daemon: Awaited<ReturnType<typeof runDaemon>> | undefined;
  let pending: string | undefined;
  let signals = 0;
  const onSignal = (sig: string) => {
    if (++signals > 1) {
      log.warn({ signal: sig }, "second signal: exiting now");
      // A stop may not have unmounted yet (it first waits for the kernel's last closes).
      daemon?.exitingNow();
      process.exit(130);
    }
    if (daemon) void daemon.stop(sig);
    else pending = sig;
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  try {
    daemon = await runDaemon(cfg, log);
  } catch (e) {
    log.error((e as Error).message);
    process.exit(1);
  }
  if (pending) void daemon.stop(pending);
  await daemon.done;
  process.exit(0);
}

/** Run a CSI role until SIGINT/SIGTERM. */
async function roleMain(cfg: { debug: boolean; logFormat: LogFormat }, start: (log: Logger) => Promise<Role>) {
  const log = createLogger({ debug: cfg.debug, format: cfg.logFormat });
  // Caught from the start, as the daemon does: a signal while the role starts stops it once started.
  const signalled = new Promise<void>((res) => {
    process.once("SIGINT", () => res());
    process.once("SIGTERM", () => res());
  });
  let role: Role;
  try {
    role = await start(log);
  } catch (e) {
    log.error((e as Error).message);
    process.exit(1);
  }
  await signalled;
  await role.stop().catch((e: unknown) => log.warn({ err: (e as Error).message }, "stop failed"));
  process.exit(0);
}

function configOrExit<T>(make: () => T): T {
  try {
    return make();
  } catch (e) {
    process.stderr.write(`mcfs: ${(e as Error).message}\n`);
    process.exit(2);
  }
}

await yargs(process.argv.slice(2))
  .scriptName("mcfs")
  .usage("mcfs: a distributed POSIX-like filesystem for compute clusters (FUSE mount, Redis metadata, data on each node's disk)")
  .command(["daemon", "$0"], "Mount the filesystem on this node and serve its files to other nodes", (y) => daemonOptions(y), (a) => daemonMain(a))
  .command("csi-controller", "Serve the CSI controller (volumes as directories of the filesystem, recorded in Redis)", (y) => csiOptions(y), (a) => {
    const cfg = configOrExit(() => csiConfig(a, pkg.version));
    return roleMain(cfg, (log) => runCsiController(cfg, log));
  })
  .command("csi-node", "Serve the CSI node plugin (bind-mounts volumes of the node-level mount into pods)", (y) => csiNodeOptions(y), (a) => {
    const cfg = configOrExit(() => csiNodeConfig(a, process.env, pkg.version));
    return roleMain(cfg, (log) => runCsiNode(cfg, log));
  })
  .command("node", "Manage the cluster's nodes", (y) =>
    y.command("forget <node>", "Remove a node whose disk is gone from the cluster's records (holders, cached copies, todo list)", (z) => nodeForgetOptions(z), (a) => nodeForgetMain(a)).demandCommand(1),
  )
  .command("repair", "Ask live nodes for the copies files are missing (fewer than --replicas or their directory's user.mcfs.replicas) and follow them being made", (y) => repairOptions(y), (a) => repairMain(a))
  .command("status", "Show the cluster: nodes, what each holds, files with a single copy or no live holder", (y) => statusOptions(y), (a) => statusMain(a))
  .command("fsck", "List where the namespace and the nodes' disks disagree (records without bytes, stale holders, dangling names, ...); --repair repairs what can be", (y) => fsckOptions(y), (a) => fsckMain(a))
  .example("mcfs daemon -f /mnt/mcfs -r /var/lib/mcfs/root", "one node, private Redis")
  .example("mcfs daemon -f /mnt/mcfs -r /data/mcfs -u redis://redis-host:6379 -i 10.0.0.5 -p 5000", "a node of a cluster")
  .strict()
  .version(pkg.version)
  .help()
  .alias("h", "help")
  .wrap(process.stdout.columns || 120)
  .fail((msg, err) => {
    process.stderr.write(`mcfs: ${msg ?? err?.message}\nRun "mcfs --help" for usage.\n`);
    process.exit(2);
  })
  .parseAsync();
