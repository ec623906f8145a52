/**
 * Finding and repairing files with fewer copies than their directory wants. A holder counts while its
 * node is alive, or gone for less than the grace period (a restart is not a loss); a forgotten node
 * counts never. Missing copies are asked of live nodes that hold none, the least full first; a file
 * no live node can serve is lost until a holder comes back.
 */
import { holdersAt } from "../meta/holding.ts";
import type { FileHoldings, MetadataStore, NodeState } from "../meta/store.ts";
import type { ReplicaCount } from "./replica-count.ts";
import { pickTargets } from "./targets.ts";

/** Nodes with f's bytes at its current version on their disks (cached copies do not count), of those that count. */
export function diskCopies(f: FileHoldings, counts: (node: string) => boolean): string[] {
  return [...f.holders.data].filter(([n, v]) => v === f.version && counts(n)).map(([n]) => n);
}

export interface ReplicaReport {
  /** Files looked at. */
  files: number;
  /** Files with fewer copies than wanted, and their bytes. */
  under: { files: number; bytes: number };
  /** Copies asked for by this pass. */
  queued: number;
  /** Files under their count that no live node can serve now. */
  unavailable: number;
}

export interface RepairOptions {
  store: MetadataStore;
  count: ReplicaCount;
  /** How long a holder's node may be gone before its copies are made again elsewhere. */
  graceMs: number;
  /** Ask for the missing copies (false: only count them, as `mcfs status` does). */
  queue: boolean;
  onProgress?: (seen: number, bound: number) => void;
}

/** Copies asked for and not done yet, cluster-wide. */
export async function copyBacklog(store: MetadataStore): Promise<number> {
  let n = 0;
  for (const l of (await store.copyOrders()).values()) n += l.length;
  return n;
}

export async function checkReplicas(o: RepairOptions): Promise<ReplicaReport> {
  const nodes = await o.store.nodes();
  const now = Date.now();
  const counts = (n: NodeState | undefined) => !!n && (n.alive || (n.lastSeen !== undefined && now - n.lastSeen < o.graceMs));
  /**
   * Copies asked of each node and not done yet, by "ino.version": they count as made, and that node is
   * not asked twice. Not those of a node gone past the grace: they are asked of others.
   */
  const ordered = new Map<string, Set<string>>();
  for (const [node, orders] of await o.store.copyOrders()) {
    if (!counts(nodes.get(node))) continue;
    for (const c of orders) {
      const key = `${c.ino}.${c.version}`;
      ordered.set(key, (ordered.get(key) ?? new Set()).add(node));
    }
  }
  const files: FileHoldings[] = [];
  await o.store.scanFiles((b) => files.push(...b), o.onProgress);
  const report: ReplicaReport = { files: files.length, under: { files: 0, bytes: 0 }, queued: 0, unavailable: 0 };
  for (const f of files) {
    const want = await o.count.of(f.parent);
    const key = `${f.ino}.${f.version}`;
    const copies = diskCopies(f, (n) => counts(nodes.get(n)));
    const coming = ordered.get(key) ?? new Set<string>();
    if (copies.length >= want) continue;
    report.under.files++;
    report.under.bytes += f.size;
    const sources = [...holdersAt(f.holders, f.version, (n) => nodes.get(n)?.startedAt)].filter((n) => nodes.get(n)?.alive);
    if (!sources.length && f.size > 0) {
      report.unavailable++;
      continue;
    }
    if (!o.queue) continue;
    const atVersion = diskCopies(f, () => true);
    const targets = pickTargets(nodes, new Set([...atVersion, ...coming]), want - copies.length - coming.size);
    for (const t of targets) await o.store.queueCopy(t, { ino: f.ino, version: f.version, path: "" });
    report.queued += targets.length;
  }
  return report;
}
