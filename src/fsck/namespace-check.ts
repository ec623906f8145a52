import type { MetadataStore, NodeState, ScannedInode } from "../meta/store.ts";
import { isReg } from "../util/file-mode.ts";


/** The whole namespace as one scan of Redis saw it: what the local check compares a root path with. */
export interface Namespace {
  inodes: Map<number, ScannedInode>;
  /** Every name that reaches an inode from the root, as a namespace path ("/a/b"). */
  paths: Map<number, string[]>;
  nodes: Map<string, NodeState>;
}

/** Where an inode is, for an operator: its first reachable path, else its recorded primary name. */
export function pathOf(ns: Namespace, ino: number): string {
  const p = ns.paths.get(ino)?.[0];
  if (p !== undefined) return p;
  const r = ns.inodes.get(ino);
  return r ? `(unreachable: ${r.name} in directory ${r.parent})` : `(inode ${ino})`;
}

export interface ClusterFindings {
  /** Regular files with bytes that no root path holds at their current version, nor any current cache: lost. */
  withoutBytes: { ino: number; path: string; size: number }[];
  /** Held at their current version only in caches of the nodes' current runs: a restart or eviction loses them. */
  cachedOnly: { ino: number; path: string; size: number; nodes: string[] }[];
  staleHolders: { ino: number; path: string; node: string; version: number; current: number }[];
  unknownHolders: { ino: number; path: string; node: string; version: number }[];
  danglingNames: { parent: number; name: string; path: string; ino: number }[];
  /** Records no directory entry names and that are not orphans (nothing can reach them). */
  lostInodes: { ino: number; path: string }[];
  /** Entries of the orphans set that are wrong: linked again, no record, or unlinked with no node live to have them open. */
  badOrphans: { ino: number; why: "linked" | "no-record" | "no-live-node" }[];
  /** Unlinked inodes kept for a node that may have them open: not a disagreement. */
  openOrphans: number;
}


/** Read the whole namespace (every record, directory and holder list) in one pass. */
export async function readNamespace(store: MetadataStore, onProgress?: (seen: number, bound: number) => void): Promise<Namespace> {
  const inodes = new Map<number, ScannedInode>();
  const nodes = await store.nodes();
  await store.scanInodes((batch) => {
    for (const i of batch) inodes.set(i.ino, i);
  }, onProgress);
  // Walk from the root: each directory once (a directory has one name), files under every name.
  const paths = new Map<number, string[]>([[1, [""]]]);
  const queue: [number, string][] = [[1, ""]];
  while (queue.length) {
    const [dir, path] = queue.pop()!;
    for (const e of inodes.get(dir)?.entries ?? []) {
      const p = `${path}/${e.name}`;
      const known = paths.get(e.ino);
      if (known) {
        known.push(p);
        continue;
      }
      paths.set(e.ino, [p]);
      if (inodes.get(e.ino)?.entries) queue.push([e.ino, p]);
    }
  }
  return { inodes, paths, nodes };
}

/** The disagreements Redis alone shows, across the whole cluster. */
export async function checkCluster(store: MetadataStore, ns: Namespace): Promise<ClusterFindings> {
  const f: ClusterFindings = { withoutBytes: [], cachedOnly: [], staleHolders: [], unknownHolders: [], danglingNames: [], lostInodes: [], badOrphans: [], openOrphans: 0 };
  const orphans = new Set(await store.orphans());
  for (const i of ns.inodes.values()) {
    if (i.ino !== 1 && !ns.paths.has(i.ino) && !orphans.has(i.ino)) f.lostInodes.push({ ino: i.ino, path: pathOf(ns, i.ino) });
    for (const e of i.entries ?? []) if (!ns.inodes.has(e.ino)) f.danglingNames.push({ parent: i.ino, name: e.name, path: `${pathOf(ns, i.ino)}/${e.name}`, ino: e.ino });
    if (!isReg(i.mode) || !i.holders) continue;
    const path = pathOf(ns, i.ino);
    let rooted = false;
    for (const [node, version] of i.holders.data) {
      if (!ns.nodes.has(node)) f.unknownHolders.push({ ino: i.ino, path, node, version });
      else if (version !== i.version) f.staleHolders.push({ ino: i.ino, path, node, version, current: i.version });
      else rooted = true;
    }
    // An empty file has no bytes to lose; an unlinked one is not the namespace's any more.
    if (rooted || i.size === 0 || orphans.has(i.ino)) continue;
    // A cached copy is real only from the run that made it: a restart empties the cache.
    const cached = [...i.holders.cached].filter(([n, c]) => c.version === i.version && ns.nodes.get(n)?.startedAt === c.startedAt).map(([n]) => n);
    if (cached.length) f.cachedOnly.push({ ino: i.ino, path, size: i.size, nodes: cached });
    else f.withoutBytes.push({ ino: i.ino, path, size: i.size });
  }
  const anyLive = [...ns.nodes.values()].some((n) => n.alive);
  for (const ino of orphans) {
    const r = ns.inodes.get(ino);
    if (!r) f.badOrphans.push({ ino, why: "no-record" });
    else if (r.nlink > 0) f.badOrphans.push({ ino, why: "linked" });
    else if (!anyLive) f.badOrphans.push({ ino, why: "no-live-node" });
    else f.openOrphans++;
  }
  return f;
}
