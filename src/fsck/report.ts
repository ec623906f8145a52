import { formatBytes } from "../status/cluster-status.ts";
import type { ClusterFindings } from "./namespace-check.ts";
import type { RootFindings } from "./root-check.ts";
import type { Repairs } from "./repair.ts";

export interface Findings {
  cluster: ClusterFindings;
  root?: RootFindings;
}

/** Disagreements found: everything but warnings (files held only in caches, unlinked files kept open). */
export function disagreements(f: Findings): number {
  const c = f.cluster, r = f.root;
  return c.withoutBytes.length + c.staleHolders.length + c.unknownHolders.length + c.danglingNames.length + c.lostInodes.length + c.badOrphans.length
    + (r ? r.withoutRecords.length + r.sizeDiffers.length + r.missing.length : 0);
}

function section<T>(out: string[], title: string, items: T[], line: (x: T) => string): void {
  if (!items.length) return;
  out.push(`${title}: ${items.length}`, ...items.map((x) => `  ${line(x)}`));
}

/** The findings for a terminal: one section per kind, one line per finding, paths first. */
export function formatFindings(f: Findings): string {
  const c = f.cluster;
  const out: string[] = [];
  section(out, "records without bytes anywhere (lost: no node has them; cannot be repaired)", c.withoutBytes, (x) => `${x.path}  (inode ${x.ino}, ${formatBytes(x.size)})`);
  section(out, "warning: held only in caches (no root path has them; a restart or eviction loses them)", c.cachedOnly, (x) => `${x.path}  (inode ${x.ino}, cached on ${x.nodes.join(", ")})`);
  section(out, "stale holders (listed at a version that is not the record's)", c.staleHolders, (x) => `${x.path}  (inode ${x.ino}) on ${x.node}`);
  section(out, "holders that are no known node", c.unknownHolders, (x) => `${x.path}  (inode ${x.ino}) on ${x.node}`);
  section(out, "dangling names (the inode they name has no record)", c.danglingNames, (x) => `${x.path}  (inode ${x.ino})`);
  section(out, "lost inodes (a record no name reaches, not an orphan)", c.lostInodes, (x) => `inode ${x.ino} ${x.path}`);
  section(out, "wrong orphans", c.badOrphans, (x) => `inode ${x.ino}: ${x.why === "linked" ? "it has names" : x.why === "no-record" ? "no record" : "unlinked, and no node is live to have it open"}`);
  if (f.root) {
    const r = f.root;
    section(out, `bytes without records (root path of ${r.node})`, r.withoutRecords, (x) => x);
    section(out, `size differs from the record (a write cut short, on ${r.node})`, r.sizeDiffers, (x) => `${x.path}  (inode ${x.ino}: record ${x.size} B, here ${x.localSize} B)`);
    section(out, `listed as held by ${r.node}, but not here`, r.missing, (x) => `${x.path}  (inode ${x.ino})`);
  }
  if (c.openOrphans) out.push(`unlinked files kept while a node may have them open: ${c.openOrphans}`);
  const n = disagreements(f);
  out.push(n ? `${n} disagreement${n === 1 ? "" : "s"}` : "no disagreements");
  return `${out.join("\n")}\n`;
}

export function formatRepairs(r: Repairs): string {
  const s = r.scan;
  const parts = [
    `${r.holdersDropped} holder entries dropped`,
    `${r.namesRemoved} dangling names removed`,
    `${r.orphansUnlisted} orphans unlisted (they have names)`,
    `${r.orphansPurged} orphans purged`,
    `${r.republished} files published as on disk`,
    ...(s ? [`start-up scan: ${s.published} published, ${s.repaired} republished, ${s.setAside} set aside in .mcfs/orphans`] : []),
  ];
  return `repaired: ${parts.join("; ")}\n`;
}
