import type { Holders } from "./store.ts";

/** The run (startedAt) a node is in now, if known: a cached copy counts only from the run that made it. */
export type RunOf = (node: string) => number | undefined;

/** Whether node holds a file's bytes at version: in its root path, or in the cache of its current run (a restart empties the cache). */
export function holdsVersion(h: Holders, node: string, version: number, runOf: RunOf): boolean {
  if (h.data.get(node) === version) return true;
  const c = h.cached.get(node);
  return c !== undefined && c.version === version && runOf(node) === c.startedAt;
}

/** Every node holding a file's bytes at version. */
export function holdersAt(h: Holders, version: number, runOf: RunOf): Set<string> {
  const out = new Set<string>();
  for (const node of new Set([...h.data.keys(), ...h.cached.keys()])) if (holdsVersion(h, node, version, runOf)) out.add(node);
  return out;
}
