import { holdsVersion } from "../../meta/holding.ts";
import type { Holders, MetadataStore, NodeInfo } from "../../meta/store.ts";

/** A node holding the bytes asked for, and where to reach it. */
export interface Source {
  node: string;
  address: string;
}

/** Which other nodes to ask for a file's bytes at a version, in the order to ask them. */
export interface Sources {
  /**
   * The nodes that hold ino at version: live ones first, in random order (readers of one file spread
   * over its copies), then root-path holders that stopped beating (they may still answer).
   */
  of(ino: number, version: number, given?: Holders): Promise<Source[]>;
  /** Ask the store for the cluster's nodes again at the next call. */
  refresh(): void;
}

/** How long the store's list of nodes answers again. */
const NODES_TTL_MS = 1000;

export function createSources(o: { store: MetadataStore; nodeId: string }): Sources {
  let known: { at: number; nodes: Promise<Map<string, NodeInfo & { alive: boolean }>> } | undefined;
  function nodes() {
    if (!known || Date.now() - known.at > NODES_TTL_MS) known = { at: Date.now(), nodes: o.store.nodes() };
    return known.nodes;
  }
  return {
    async of(ino, version, given) {
      const [h, all] = await Promise.all([given ?? o.store.holders(ino), nodes()]);
      const runOf = (node: string) => all.get(node)?.startedAt;
      const live: Source[] = [];
      const quiet: Source[] = [];
      for (const node of new Set([...h.data.keys(), ...h.cached.keys()])) {
        const n = all.get(node);
        if (node === o.nodeId || !n || !holdsVersion(h, node, version, runOf)) continue;
        if (n.alive) live.push({ node, address: n.address });
        else if (h.data.get(node) === version) quiet.push({ node, address: n.address });
      }
      for (let i = live.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [live[i], live[j]] = [live[j]!, live[i]!];
      }
      return [...live, ...quiet];
    },
    refresh() {
      known = undefined;
    },
  };
}
