import type { NodeState } from "../meta/store.ts";

/** Up to count live nodes outside exclude to take new copies: the least full first (most bytes free). */
export function pickTargets(nodes: Map<string, NodeState>, exclude: Set<string>, count: number): string[] {
  if (count <= 0) return [];
  return [...nodes.values()]
    .filter((n) => n.alive && !exclude.has(n.id))
    .sort((a, b) => (b.report?.free ?? -1) - (a.report?.free ?? -1) || a.id.localeCompare(b.id))
    .slice(0, count)
    .map((n) => n.id);
}
