import type { Argv } from "yargs";
import { createRedisStore } from "../meta/redis-store.ts";
import { createProgress } from "../util/progress.ts";
import { createLogger, redactUrl } from "../util/log.ts";

export function nodeForgetOptions<T>(y: Argv<T>) {
  return y
    .positional("node", { type: "string", demandOption: true, describe: "Id of the node (as `mcfs status` shows it)" })
    .option("redis_url", { alias: ["u", "redis-url"], type: "string", demandOption: true, describe: "Redis of the cluster" })
    .option("force", { type: "boolean", default: false, describe: "Forget it even though its heartbeat is current" })
    .check((a) => {
      if (!/^(redis|rediss|unix):\/\//.test(a.redis_url)) throw new Error(`--redis_url must start with redis://, rediss:// or unix://, got "${redactUrl(a.redis_url)}"`);
      return true;
    });
}

type Args = Awaited<ReturnType<typeof nodeForgetOptions>["argv"]>;

/** `mcfs node forget ID`: a node whose disk is gone leaves the cluster's records for good. */
export async function nodeForgetMain(a: Args): Promise<void> {
  const log = createLogger({ name: "mcfs node forget" });
  let store;
  try {
    store = await createRedisStore({ url: a.redis_url, nodeId: "mcfs-admin" });
  } catch (e) {
    process.stderr.write(`mcfs: ${(e as Error).message}\n`);
    process.exit(1);
  }
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
