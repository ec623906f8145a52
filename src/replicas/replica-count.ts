/**
 * How many copies of a file are wanted: the `user.mcfs.replicas` extended attribute of its nearest
 * directory that has one (a StorageClass's volume directory, or any directory a user marks), else the
 * cluster-wide setting `replicas` (set by `mcfs daemon --replicas`), else 1 (no replicas).
 */
import type { MetadataStore } from "../meta/store.ts";
import { FsError, E } from "../util/errno.ts";

export const REPLICAS_XATTR = "user.mcfs.replicas";
/** Cluster-wide setting in the store. */
export const REPLICAS_SETTING = "replicas";
/** Set once some directory asked for replicas: until then no node scans for missing ones. */
const MARKED_SETTING = "replica-dirs";
export const MAX_REPLICAS = 16;
/** How long a directory's answer is reused: a change of the attribute or setting takes effect within it. */
const REUSE_MS = 5_000;
/** Deeper trees than this take the setting of the directory this many levels up. */
const MAX_DEPTH = 256;

export interface ReplicaCount {
  /** Copies wanted of a file in directory dir. */
  of(dir: number): Promise<number>;
  /** Whether any file may want more than one copy (the cluster setting, or a directory marked). */
  inUse(): Promise<boolean>;
  /** The cluster-wide count (the setting, else 1). */
  clusterWide(): Promise<number>;
}

/**
 * The count a user sets on a directory: a whole number 1..MAX_REPLICAS (EINVAL otherwise), and above
 * the cluster-wide one only for root (EPERM): each copy takes space on other nodes' disks, which a
 * directory's owner could otherwise multiply for everyone.
 */
export async function checkDirReplicas(uid: number, value: Uint8Array, clusterWide: () => Promise<number>): Promise<number> {
  const n = parseReplicas(value);
  if (n === undefined) throw new FsError(E.EINVAL, `${REPLICAS_XATTR} must be a whole number of copies from 1 to ${MAX_REPLICAS}`);
  if (uid !== 0) {
    const most = await clusterWide();
    if (n > most) throw new FsError(E.EPERM, `${REPLICAS_XATTR} ${n}: only root may ask for more copies than the cluster-wide ${most}`);
  }
  return n;
}

/** Ask for n copies of the files under directory dir (its attribute, and the mark that makes nodes look). */
export async function setDirReplicas(store: MetadataStore, dir: number, n: number): Promise<void> {
  await store.setXattr(dir, REPLICAS_XATTR, Buffer.from(String(n)), 0);
  await markReplicaDir(store, n);
}

/** A directory's attribute was set to n: mark the cluster as having replicas, so they are checked. */
export async function markReplicaDir(store: MetadataStore, n: number | undefined): Promise<void> {
  if (n !== undefined && n > 1) await store.setSetting(MARKED_SETTING, "1");
}

/** A count from an attribute or setting value; anything else is not one (ignored). */
export function parseReplicas(v: string | Uint8Array | undefined): number | undefined {
  if (v === undefined) return undefined;
  const s = typeof v === "string" ? v : Buffer.from(v).toString("utf8");
  const n = Number(s.trim());
  return Number.isInteger(n) && n >= 1 && n <= MAX_REPLICAS ? n : undefined;
}

export function createReplicaCount(store: MetadataStore): ReplicaCount {
  const known = new Map<number, { n: number; until: number }>();
  let cluster: { n: number; until: number } | undefined;

  async function clusterWide(): Promise<number> {
    if (cluster && cluster.until > Date.now()) return cluster.n;
    const n = parseReplicas(await store.setting(REPLICAS_SETTING)) ?? 1;
    cluster = { n, until: Date.now() + REUSE_MS };
    return n;
  }

  async function of(dir: number, depth = 0): Promise<number> {
    const k = known.get(dir);
    if (k && k.until > Date.now()) return k.n;
    let n = parseReplicas(await store.getXattr(dir, REPLICAS_XATTR).catch(() => undefined));
    if (n === undefined) {
      const parent = dir === 1 || depth >= MAX_DEPTH ? 0 : (await store.get(dir).catch(() => undefined))?.parent ?? 0;
      n = parent ? await of(parent, depth + 1) : await clusterWide();
    }
    if (known.size > 100_000) known.clear();
    known.set(dir, { n, until: Date.now() + REUSE_MS });
    return n;
  }

  return {
    of: (dir) => of(dir),
    clusterWide,
    async inUse() {
      return (await clusterWide()) > 1 || (await store.setting(MARKED_SETTING)) === "1";
    },
  };
}
