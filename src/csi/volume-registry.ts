/** A volume as the controller records it. */
export interface VolumeRecord {
  id: string;
  /** The CO's name for it (idempotency key of CreateVolume). */
  name: string;
  capacity: number;
  createdAt: number;
  /** On a Redis Cluster: the hash tag of the volume's own filesystem (undefined: a directory of the shared one). */
  tag?: string;
  /** DeleteVolume has begun: nodes stop serving the volume and drop its bytes. */
  deleting?: boolean;
}

/** A volume published to a node (ControllerPublishVolume). */
export interface Publication {
  readonly: boolean;
  /** Access mode of the capability it was published with. */
  mode: number;
}

/** What a node plugin reports of itself: it exists, and the space its root path has. */
export interface NodeReport {
  free: number;
  total: number;
  at: number;
}

/** The controller's records of volumes, publications and node plugins. */
export interface VolumeRegistry {
  ping(): Promise<boolean>;
  get(id: string): Promise<VolumeRecord | undefined>;
  /** Store rec unless its id exists; returns the record stored and whether it is new. */
  create(rec: VolumeRecord): Promise<{ record: VolumeRecord; created: boolean }>;
  /** Record that DeleteVolume has begun (nothing happens to a volume not recorded). */
  markDeleting(id: string): Promise<void>;
  /** Forget a volume and its publications; the tag of its own filesystem is kept as deleted. */
  remove(id: string): Promise<void>;
  /** Tags of the filesystems of deleted volumes: a node that was away then still has their bytes to remove. */
  deletedTags(): Promise<Set<string>>;
  /** Volumes by id after the given one (exclusive), at most max; more tells whether others follow. */
  list(after: string, max: number): Promise<{ records: VolumeRecord[]; more: boolean }>;
  publications(id: string): Promise<Map<string, Publication>>;
  publish(id: string, node: string, p: Publication): Promise<void>;
  /** Unpublish from one node, or from all when node is undefined. */
  unpublish(id: string, node?: string): Promise<void>;
  setCapacity(id: string, bytes: number): Promise<void>;
  reportNode(node: string, r: NodeReport): Promise<void>;
  nodes(): Promise<Map<string, NodeReport>>;
  close(): Promise<void>;
}

/** Every volume recorded, page by page. */
export async function allVolumes(registry: VolumeRegistry): Promise<VolumeRecord[]> {
  const out: VolumeRecord[] = [];
  for (let after = "", more = true; more; ) {
    const page = await registry.list(after, 1000);
    out.push(...page.records);
    after = page.records.at(-1)?.id ?? after;
    more = page.more;
  }
  return out;
}
