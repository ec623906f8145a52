import { join } from "node:path";
import type { Argv } from "yargs";
import { clusterRedisOption, openClusterStore } from "./admin.ts";
import { openLocalDir, type LocalDir } from "../local/local-dir.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import { lockRoot } from "../daemon/root-lock.ts";
import type { MetadataStore } from "../meta/store.ts";
import { checkCluster, readNamespace } from "../fsck/namespace-check.ts";
import { checkRoot, rootNodeId } from "../fsck/root-check.ts";
import { noRepairs, repairCluster, repairRoot, type Repairs } from "../fsck/repair.ts";
import { disagreements, formatFindings, formatRepairs, type Findings } from "../fsck/report.ts";
import { createProgress } from "../util/progress.ts";
import { createLogger, redactUrl, type Logger } from "../util/log.ts";

export function fsckOptions<T>(y: Argv<T>) {
  return clusterRedisOption(y)
    .option("root", { alias: ["r", "root_path"], type: "string", describe: "Also check this node's root path (its daemon stopped; run as root)" })
    .option("repair", { type: "boolean", default: false, describe: "Repair what can be: holder lists, dangling names, orphans, and with --root this node's files" })
    .option("json", { type: "boolean", default: false, describe: "Print JSON (for scripts) instead of text" });
}

type Args = Awaited<ReturnType<typeof fsckOptions>["argv"]>;

/** A node's root path, opened and locked against its daemon (a running daemon changes it under the check). */
function openRoot(path: string): { root: LocalDir; node: string; release(): void } {
  const root = openLocalDir(path);
  try {
    const node = rootNodeId(root);
    const lock = lockRoot(join(path, RESERVED_NAME), path);
    return { root, node, release: () => (lock.release(), root.close()) };
  } catch (e) {
    root.close();
    throw e;
  }
}

async function check(store: MetadataStore, log: Logger, local?: { root: LocalDir; node: string }): Promise<Findings> {
  const progress = createProgress("reading the namespace", log);
  const ns = await readNamespace(store, (seen, bound) => progress.update(seen, bound));
  progress.stop();
  const cluster = await checkCluster(store, ns);
  if (!local) return { cluster };
  const walk = createProgress("checking the root path", log, true);
  const root = checkRoot(local.root, local.node, ns, (n) => walk.update(n, 0));
  walk.stop();
  return { cluster, root };
}

/**
 * `mcfs fsck`: where the namespace and the disks disagree, and with --repair the repairs. Exit 0:
 * nothing (left) wrong; 1: disagreements remain; 2: an error (a bad flag, Redis unreachable).
 */
export async function fsckMain(a: Args): Promise<void> {
  const log = createLogger({ name: "mcfs fsck", format: a["log-format"] });
  let local: ReturnType<typeof openRoot> | undefined;
  try {
    if (a.root !== undefined) local = openRoot(a.root);
  } catch (e) {
    process.stderr.write(`mcfs: fsck --root ${a.root}: ${(e as Error).message}\n`);
    process.exit(2);
  }
  const store = await openClusterStore(a, "mcfs-fsck", 2);
  let code = 2;
  try {
    const found = await check(store, log, local);
    let repairs: Repairs | undefined, left = found;
    if (a.repair && disagreements(found)) {
      repairs = noRepairs();
      await repairCluster(store, found.cluster, repairs);
      if (local && found.root) await repairRoot(local.root, store, found.root, log, repairs);
      // What is left is checked, not assumed.
      left = await check(store, log, local);
    }
    if (a.json) process.stdout.write(`${JSON.stringify({ redis: redactUrl(a.redis_url), found, ...(repairs ? { repairs, left } : {}) }, null, 2)}\n`);
    else {
      process.stdout.write(formatFindings(found));
      if (repairs) process.stdout.write(`${formatRepairs(repairs)}after repair:\n${formatFindings(left)}`);
    }
    code = disagreements(left) ? 1 : 0;
  } catch (e) {
    process.stderr.write(`mcfs: fsck failed: ${(e as Error).message}\n`);
  } finally {
    local?.release();
    await store.close();
  }
  process.exit(code);
}
