#!/usr/bin/env bun
import yargs from "yargs";
import { daemonConfig, daemonOptions } from "./daemon-command.ts";
import { runDaemon } from "../daemon/daemon.ts";
import { createLogger } from "../util/log.ts";
import pkg from "../../package.json" with { type: "json" };

async function daemonMain(argv: Parameters<typeof daemonConfig>[0]) {
  let cfg;
  try {
    cfg = daemonConfig(argv, process.env);
  } catch (e) {
    process.stderr.write(`mcfs: ${(e as Error).message}\n`);
    process.exit(2);
  }
  const log = createLogger({ debug: cfg.debug });
  let d;
  try {
    d = await runDaemon(cfg, log);
  } catch (e) {
    log.error((e as Error).message);
    process.exit(1);
  }
  const daemon = d;
  let signals = 0;
  const onSignal = (sig: string) => {
    if (++signals > 1) {
      log.warn({ signal: sig }, "second signal: exiting now");
      process.exit(130);
    }
    void daemon.stop(sig);
  };
  process.on("SIGINT", () => onSignal("SIGINT"));
  process.on("SIGTERM", () => onSignal("SIGTERM"));
  await daemon.done;
  process.exit(0);
}

await yargs(process.argv.slice(2))
  .scriptName("mcfs")
  .usage("mcfs: a distributed POSIX-like filesystem for compute clusters (FUSE mount, Redis metadata, data on each node's disk)")
  .command(["daemon", "$0"], "Mount the filesystem on this node and serve its files to other nodes", (y) => daemonOptions(y), (a) => daemonMain(a))
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
