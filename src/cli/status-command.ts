import type { Argv } from "yargs";
import { clusterRedisOption, openClusterStore } from "./admin.ts";
import { clusterStatus, formatStatus } from "../status/cluster-status.ts";
import { createProgress } from "../util/progress.ts";
import { createLogger, redactUrl } from "../util/log.ts";

export function statusOptions<T>(y: Argv<T>) {
  return clusterRedisOption(y).option("json", { type: "boolean", default: false, describe: "Print JSON (for scripts) instead of a table" });
}

type StatusArgs = Awaited<ReturnType<typeof statusOptions>["argv"]>;

/** `mcfs status`: nodes, what they hold, and the files at risk. Progress goes to stderr. */
export async function statusMain(a: StatusArgs): Promise<void> {
  const log = createLogger({ name: "mcfs status", format: a["log-format"] });
  const store = await openClusterStore(a, "mcfs-status");
  const progress = createProgress("scanning files", log);
  try {
    const st = await clusterStatus(store, (seen, bound) => progress.update(seen, bound));
    progress.stop();
    process.stdout.write(a.json ? `${JSON.stringify(st, null, 2)}\n` : formatStatus(st, redactUrl(a.redis_url)));
  } catch (e) {
    progress.stop();
    process.stderr.write(`mcfs: status failed: ${(e as Error).message}\n`);
    process.exit(1);
  } finally {
    await store.close();
  }
  process.exit(0);
}
