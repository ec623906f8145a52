import type { LocalDir } from "../local/local-dir.ts";
import type { MetadataStore } from "../meta/store.ts";
import { scanRoot, type ScanResult } from "../daemon/startup-scan.ts";
import type { Logger } from "../util/log.ts";
import type { ClusterFindings } from "./namespace-check.ts";
import type { RootFindings } from "./root-check.ts";

/** What --repair changed. Each change is one Redis operation that re-checks its reason as it runs. */
export interface Repairs {
  holdersDropped: number;
  namesRemoved: number;
  orphansUnlisted: number;
  orphansPurged: number;
  /** Files of this node published as they are on disk (a write cut short). */
  republished: number;
  /** The start-up scan's publishing of the root path's files without records. */
  scan?: ScanResult;
}

export const noRepairs = (): Repairs => ({ holdersDropped: 0, namesRemoved: 0, orphansUnlisted: 0, orphansPurged: 0, republished: 0 });

/** Repair what Redis alone can: holder lists, dangling names, the orphans set. Records without bytes cannot be. */
export async function repairCluster(store: MetadataStore, f: ClusterFindings, r: Repairs): Promise<void> {
  for (const h of f.staleHolders) if (await store.dropHolder(h.ino, h.node, h.version, "stale")) r.holdersDropped++;
  for (const h of f.unknownHolders) if (await store.dropHolder(h.ino, h.node, h.version, "unknown")) r.holdersDropped++;
  for (const d of f.danglingNames) if (await store.dropDanglingEntry(d.parent, d.name, d.ino)) r.namesRemoved++;
  for (const o of f.badOrphans) {
    const done = await store.settleOrphan(o.ino);
    if (done === "unlisted") r.orphansUnlisted++;
    if (done === "purged") r.orphansPurged++;
  }
}

/**
 * Repair a node's root path against the namespace (its daemon stopped): holder entries of files it
 * does not have go, a held file whose size differs is published as it is on disk (publish, never roll
 * back, as at start), then the start-up scan publishes the files without records.
 */
export async function repairRoot(root: LocalDir, store: MetadataStore, f: RootFindings, log: Logger, r: Repairs): Promise<void> {
  for (const m of f.missing) if (await store.dropHolder(m.ino, f.node, m.version, "absent")) r.holdersDropped++;
  for (const s of f.sizeDiffers) {
    const st = root.stat(s.path);
    const [rec] = await store.getMany([s.ino]);
    // Removed, or another node wrote a newer version meanwhile: its bytes win over this stale file.
    if (!rec || !st?.isFile() || (await store.locations(s.ino)).get(f.node) !== rec.version) continue;
    await store.setData(s.ino, Number(st.size), st.mtimeNs, st.ctimeNs, f.node, s.path);
    r.republished++;
  }
  // "set-aside": a file marked as an inode the namespace no longer has was deleted while the node was away.
  r.scan = await scanRoot(root, store, f.node, log, "set-aside");
}
