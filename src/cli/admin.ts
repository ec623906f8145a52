import type { Argv } from "yargs";
import { createRedisStore } from "../meta/redis-store.ts";
import type { MetadataStore } from "../meta/store.ts";
import { redactUrl } from "../util/log.ts";

/** -u/--redis_url of the commands that work on a cluster's records (status, node forget). */
export function clusterRedisOption<T>(y: Argv<T>) {
  return y
    .option("redis_url", { alias: ["u", "redis-url"], type: "string", demandOption: true, describe: "Redis of the cluster (as given to the daemons)" })
    .check((a) => {
      if (!/^(redis|rediss|unix):\/\//.test(a.redis_url)) throw new Error(`--redis_url must start with redis://, rediss:// or unix://, got "${redactUrl(a.redis_url)}"`);
      return true;
    });
}

/** The cluster's store, or exit 1 with the reason (Redis named without its password). */
export async function openClusterStore(url: string, as: string): Promise<MetadataStore> {
  try {
    return await createRedisStore({ url, nodeId: as });
  } catch (e) {
    process.stderr.write(`mcfs: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
