import { holdersAt } from "../meta/holding.ts";
import type { FileHoldings, MetadataStore } from "../meta/store.ts";
import { createReplicaCount } from "../replicas/replica-count.ts";
import { copyBacklog, diskCopies } from "../replicas/repair.ts";

export interface NodeStatus {
  id: string;
  address: string;
  alive: boolean;
  /** ms since the epoch of its last heartbeat, if it ever beat. */
  lastSeen?: number;
  /** Files (and their bytes) this node holds at their current version, in its root path or cache. */
  files: number;
  bytes: number;
  cache: { tier: string; bytes: number; files: number; limit: number }[];
}

export interface ClusterStatus {
  nodes: NodeStatus[];
  files: number;
  bytes: number;
  /** Files held by exactly one node: losing its disk loses them. */
  singleCopy: { files: number; bytes: number };
  /** Files none of whose holders is alive: reads fail with EIO until one comes back. */
  unavailable: { files: number; bytes: number };
  /** Files with fewer copies on live nodes' disks than their directory wants (see replicas/). */
  underReplicated: { files: number; bytes: number };
  /** Replicas asked for and not made yet. */
  replicaBacklog: number;
}

/** The cluster at a glance, from Redis alone (no node is asked). */
export async function clusterStatus(store: MetadataStore, onProgress?: (seen: number, bound: number) => void): Promise<ClusterStatus> {
  const known = await store.nodes();
  const nodes = new Map<string, NodeStatus>(
    [...known.values()].map((n) => [n.id, { id: n.id, address: n.address, alive: n.alive, lastSeen: n.lastSeen, files: 0, bytes: 0, cache: n.report?.cache ?? [] }]),
  );
  const st: ClusterStatus = { nodes: [], files: 0, bytes: 0, singleCopy: { files: 0, bytes: 0 }, unavailable: { files: 0, bytes: 0 }, underReplicated: { files: 0, bytes: 0 }, replicaBacklog: 0 };
  const all: FileHoldings[] = [];
  await store.scanFiles((files) => all.push(...files), onProgress);
  const count = createReplicaCount(store);
  const replicated = await count.inUse();
  for (const f of all) {
    const holders = holdersAt(f.holders, f.version, (node) => known.get(node)?.startedAt);
    st.files++;
    st.bytes += f.size;
    // An empty file has nothing to lose or fetch.
    if (f.size === 0) continue;
    for (const h of holders) {
      const n = nodes.get(h);
      if (!n) continue;
      n.files++;
      n.bytes += f.size;
    }
    if (holders.size === 1) {
      st.singleCopy.files++;
      st.singleCopy.bytes += f.size;
    }
    if (![...holders].some((h) => known.get(h)?.alive)) {
      st.unavailable.files++;
      st.unavailable.bytes += f.size;
    }
    if (!replicated) continue;
    if (diskCopies(f, (n) => !!known.get(n)?.alive).length < (await count.of(f.parent))) {
      st.underReplicated.files++;
      st.underReplicated.bytes += f.size;
    }
  }
  st.replicaBacklog = await copyBacklog(store);
  st.nodes = [...nodes.values()].sort((a, b) => a.id.localeCompare(b.id));
  return st;
}

const UNITS = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
export function formatBytes(n: number): string {
  let i = 0;
  while (n >= 1024 && i < UNITS.length - 1) {
    n /= 1024;
    i++;
  }
  return `${i ? n.toFixed(1) : n} ${UNITS[i]}`;
}

function ago(ms: number | undefined, now: number): string {
  if (ms === undefined) return "never";
  const s = Math.max(0, Math.round((now - ms) / 1000));
  if (s < 120) return `${s}s ago`;
  if (s < 7200) return `${Math.round(s / 60)}m ago`;
  return `${Math.round(s / 3600)}h ago`;
}

/** A table for a terminal. */
export function formatStatus(st: ClusterStatus, where: string, now = Date.now()): string {
  const live = st.nodes.filter((n) => n.alive).length;
  const rows = [["NODE", "ADDRESS", "STATE", "LAST HEARTBEAT", "FILES", "BYTES", "CACHE RAM", "CACHE DISK"]];
  for (const n of st.nodes) {
    const tier = (t: string) => {
      const c = n.cache.find((x) => x.tier === t);
      return c ? `${formatBytes(c.bytes)} (${c.files})` : "-";
    };
    rows.push([n.id, n.address, n.alive ? "live" : "expired", ago(n.lastSeen, now), n.files.toLocaleString("en"), formatBytes(n.bytes), tier("ram"), tier("disk")]);
  }
  const widths = rows[0]!.map((_, c) => Math.max(...rows.map((r) => r[c]!.length)));
  const table = rows.map((r) => r.map((v, c) => v.padEnd(widths[c]!)).join("  ").trimEnd()).join("\n");
  const line = (label: string, x: { files: number; bytes: number }) => `${label}: ${x.files.toLocaleString("en")} (${formatBytes(x.bytes)})`;
  return [
    `mcfs cluster at ${where}: ${st.nodes.length} nodes (${live} live, ${st.nodes.length - live} expired)`,
    "",
    table,
    "",
    line("files", st),
    `${line("single copy", st.singleCopy)}${st.singleCopy.files ? "  <- one disk lost loses them" : ""}`,
    `${line("every holder down", st.unavailable)}${st.unavailable.files ? "  <- reads fail with EIO until a holder is back" : ""}`,
    `${line("fewer copies than wanted", st.underReplicated)}${st.underReplicated.files ? "  <- made again once their node has been gone --replica-grace" : ""}`,
    `replicas asked for, not made yet: ${st.replicaBacklog.toLocaleString("en")}`,
    "",
  ].join("\n");
}
