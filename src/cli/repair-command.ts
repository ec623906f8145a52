import type { Argv } from "yargs";
import { clusterRedisOption, openClusterStore } from "./admin.ts";
import { createProgress } from "../util/progress.ts";
import { createLogger } from "../util/log.ts";
import { checkReplicas, copyBacklog } from "../replicas/repair.ts";
import { createReplicaCount } from "../replicas/replica-count.ts";

export function repairOptions<T>(y: Argv<T>) {
  return clusterRedisOption(y)
    .option("grace", { type: "number", default: 0, describe: "Seconds a holder's node may have been gone and still count (0: only live nodes count)" })
    .option("wait", { type: "boolean", default: true, describe: "Wait until the nodes have made the copies asked for (--no-wait: ask and return)" })
    .check((a) => {
      if (!(a.grace >= 0)) throw new Error(`--grace must be a number of seconds >= 0, got ${a.grace}`);
      return true;
    });
}

type Args = Awaited<ReturnType<typeof repairOptions>["argv"]>;

/** `mcfs repair`: ask live nodes for the copies files are missing, and follow them being made. */
export async function repairMain(a: Args): Promise<void> {
  const log = createLogger({ name: "mcfs repair", format: a["log-format"] });
  const store = await openClusterStore(a, "mcfs-admin");
  let code = 0;
  try {
    const scan = createProgress("looking for files with too few copies", log);
    const rep = await checkReplicas({ store, count: createReplicaCount(store), graceMs: a.grace * 1000, queue: true, onProgress: (seen, bound) => scan.update(seen, bound) });
    scan.stop();
    process.stdout.write(`${rep.files} files, ${rep.under.files} with too few copies: ${rep.queued} copies asked for; ${rep.unavailable} no live node can serve\n`);
    if (a.wait) {
      const total = await copyBacklog(store);
      const made = createProgress("copies being made", log);
      for (let left = total; left > 0; left = await copyBacklog(store)) {
        made.update(total - left, total);
        await Bun.sleep(500);
      }
      made.stop();
      process.stdout.write("every copy asked for was taken by its node\n");
    }
    if (rep.unavailable) code = 2;
  } catch (e) {
    process.stderr.write(`mcfs: repair failed: ${(e as Error).message}\n`);
    code = 1;
  } finally {
    await store.close();
  }
  process.exit(code);
}
