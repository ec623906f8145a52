import type { Argv } from "yargs";
import { openStore } from "../meta/open-store.ts";
import type { MetadataStore } from "../meta/store.ts";
import { checkRedisUrl, redisAccess, redisAccessOptions } from "./redis-options.ts";
import { logOptions } from "./log-options.ts";

/** -u/--redis_url (with --redis-ca, --redis-password-file, --redis-sentinel-password-file) and --log-format of the commands that work on a cluster's records (status, node forget, fsck). */
export function clusterRedisOption<T>(y: Argv<T>) {
  return logOptions(redisAccessOptions(y))
    .option("redis_url", { alias: ["u", "redis-url"], type: "string", demandOption: true, describe: "Redis of the cluster (as given to the daemons)" })
    .check((a) => {
      checkRedisUrl("--redis_url", a.redis_url);
      return true;
    });
}

type ClusterRedisArgs = Awaited<ReturnType<typeof clusterRedisOption>["argv"]>;

/**
 * The cluster's store, or exit with the reason (2: a bad flag or file; unreachable, default 1: Redis,
 * named without its password).
 */
export async function openClusterStore(a: ClusterRedisArgs, as: string, unreachable = 1): Promise<MetadataStore> {
  let access;
  try {
    access = redisAccess(a, a.redis_url);
  } catch (e) {
    process.stderr.write(`mcfs: ${(e as Error).message}\n`);
    process.exit(2);
  }
  try {
    return await openStore({ url: a.redis_url, access, nodeId: as });
  } catch (e) {
    process.stderr.write(`mcfs: ${(e as Error).message}\n`);
    process.exit(unreachable);
  }
}
