import type { Argv } from "yargs";
import { clusterRedisOption, openClusterStore } from "./admin.ts";
import { createProgress } from "../util/progress.ts";
import { createLogger } from "../util/log.ts";

export function nodeForgetOptions<T>(y: Argv<T>) {
  return clusterRedisOption(y)
    .positional("node", { type: "string", demandOption: true, describe: "Id of the node (as `mcfs status` shows it)" })
    .option("force", { type: "boolean", default: false, describe: "Forget it even though its heartbeat is current" });
}

type Args = Awaited<ReturnType<typeof nodeForgetOptions>["argv"]>;

/** `mcfs node forget ID`: a node whose disk is gone leaves the cluster's records for good. */
export async function nodeForgetMain(a: Args): Promise<void> {
  const log = createLogger({ name: "mcfs node forget", format: a["log-format"] });
  const store = await openClusterStore(a, "mcfs-admin");
  let code = 0;
  try {
    const node = (await store.nodes()).get(a.node);
    if (!node) {
      process.stderr.write(`mcfs: no node ${a.node} in this cluster (see mcfs status)\n`);
      code = 1;
    } else if (node.alive && !a.force) {
      process.stderr.write(`mcfs: node ${a.node} (${node.address}) is alive; stop it first, or pass --force\n`);
      code = 1;
    } else {
      const progress = createProgress("forgetting", log);
      const r = await store.forgetNode(a.node, (seen, bound) => progress.update(seen, bound));
      progress.stop();
      process.stdout.write(`forgot node ${a.node}: it held ${r.held} files; ${r.orphaned} of them have no copy left\n`);
    }
  } catch (e) {
    process.stderr.write(`mcfs: node forget failed: ${(e as Error).message}\n`);
    code = 1;
  } finally {
    await store.close();
  }
  process.exit(code);
}
