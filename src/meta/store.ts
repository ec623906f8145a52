import { nowNs } from "../util/time.ts";
import { S_IFDIR, S_IFMT } from "../util/file-mode.ts";
/** A file's metadata record as kept in the metadata store. Times are nanoseconds since the epoch. */
export interface Inode {
  ino: number;
  mode: number;
  uid: number;
  gid: number;
  rdev: number;
  size: number;
  nlink: number;
  atime: bigint;
  mtime: bigint;
  ctime: bigint;
  /** Data version: a new one (newVersion) on every change of the bytes; copies carry the version they hold. */
  version: number;
  /**
   * Random identity given at create and never changed: two files that get the same inode number (Redis
   * handed it out again after losing writes) are still told apart. "" for records older than it.
   */
  gen: string;
  /** Primary name: where the bytes live under each node's root path. */
  parent: number;
  name: string;
  /** Symlink target. */
  target?: string;
}

export interface NewInode {
  mode: number;
  uid: number;
  gid: number;
  rdev?: number;
  size?: number;
  target?: string;
  mtime?: bigint;
  atime?: bigint;
  /**
   * When the create happened (its ctime, and the directory's new times); by default now. A create
   * made ahead of the store passes the time its node already answers with, so every node sees the same.
   */
  ctime?: bigint;
  /**
   * The file's own ctime, when it changed after it was made: a create sent with the file's first
   * data (held-creates.ts); by default ctime. The directory's times stay ctime.
   */
  changed?: bigint;
  /** The node that holds the bytes (none for directories and special files). */
  holder?: string;
  /** An inode number from a block this node reserved; by default the next one is taken. */
  ino?: number;
  /** Its first data version (see newVersion); by default a new one. */
  version?: number;
  /** Its identity (see newGeneration); by default a new one. */
  gen?: string;
  /**
   * Inode numbers up to this one were seen by the caller (its kernel may still know them): should the
   * counter be behind it (Redis lost writes), it is raised past it before a number is taken.
   */
  above?: number;
  /**
   * A file made on this node before the store was asked (a create written behind): should another
   * node have made the same name meanwhile, this one replaces it as a rename over it would; the
   * value is the name's path, for the replaced file's holders. A directory there is still EISDIR.
   */
  replace?: string;
}

/** A new inode, and the file its name replaced (see NewInode.replace). */
export type Created = Inode & { replaced?: Removed };

/** A create's times, version and identity: those init gives, else now and new ones. */
export function createStamps(init: NewInode): { now: bigint; changed: bigint; mtime: bigint; atime: bigint; version: number; gen: string } {
  const now = init.ctime ?? nowNs();
  const mtime = init.mtime ?? now;
  return { now, changed: init.changed ?? now, mtime, atime: init.atime ?? mtime, version: init.version ?? newVersion(), gen: init.gen ?? newGeneration() };
}

/** The record a create made, as every store answers it: ino, mode and gid as the store set them. */
export function createdRecord(parent: number, name: string, init: NewInode, st: ReturnType<typeof createStamps>, made: { ino: number; mode: number; gid: number }, replaced?: Removed): Created {
  const dir = (init.mode & S_IFMT) === S_IFDIR;
  const rec: Created = { ino: made.ino, mode: made.mode, uid: init.uid, gid: made.gid, rdev: init.rdev ?? 0, size: init.size ?? 0, nlink: dir ? 2 : 1, atime: st.atime, mtime: st.mtime, ctime: st.changed, version: st.version, gen: st.gen, parent, name };
  if (init.target !== undefined) rec.target = init.target;
  if (replaced) rec.replaced = replaced;
  return rec;
}

/**
 * What a create tells the other nodes: the new name, and the file it replaced if any; else also the
 * directory's times and link count after it (parent: its ctime in ns, decimal; its nlink).
 */
export function createdChange(parent: number, name: string, ino: number, replaced: Removed | undefined, told: string[], after: { ctime: string; nlink: number }): Partial<Omit<Invalidation, "origin">> {
  return replaced
    ? { removed: [[parent, name]], added: [[parent, name, ino]], inodes: [parent, replaced.ino], todo: told }
    : { added: [[parent, name, ino]], inodes: [parent], touched: [[parent, after.ctime, after.nlink]] };
}

/**
 * A new data version: random, not a counter, so that no version of any inode ever repeats — also
 * when Redis loses recent writes and hands out an inode number again. A copy names the version it
 * holds, and is served only for exactly that version.
 */
export function newGeneration(): string {
  return Buffer.from(crypto.getRandomValues(new Uint8Array(8))).toString("hex");
}

export function newVersion(): number {
  const [hi, lo] = crypto.getRandomValues(new Uint32Array(2)) as unknown as [number, number];
  return (hi & 0x1fffff) * 2 ** 32 + lo + 1;
}

export interface DirListing {
  name: string;
  ino: number;
  /** mode >> 12: the file type. */
  type: number;
}

export interface Removed {
  ino: number;
  /** Links left; 0 means the inode is gone once no one holds it open. */
  nlink: number;
  dir: boolean;
  /** The version of the bytes the calling node held (remove, and the file a rename replaced). */
  held?: number;
}

/**
 * What remove did. Paths here and in the changes queued for nodes (TodoEntry) are the namespace's at
 * the moment of the change, never a node's cached ones: each node's disk follows the changes in order.
 */
export interface Unnamed extends Removed {
  /** The name's path. */
  path: string;
  /** The change of this node's own disk was queued for it too (a directory's: removals queued before it come first). */
  queued?: boolean;
  /**
   * A file's: changes queued for this node before were not yet taken. Its disk may have the file
   * elsewhere (or another at path) until they are made.
   */
  behind?: boolean;
}

export interface Linked {
  record: Inode;
  /** The file's primary path, and the new name's. */
  from: string;
  to: string;
}

export interface Renamed {
  ino: number;
  /** The paths of the name before and after (absent for a rename of a name onto itself). */
  from?: string;
  to?: string;
  /** The destination that was replaced, if any. */
  replaced?: Removed;
  /** With RENAME_EXCHANGE: the inode that moved the other way. */
  exchanged?: number;
  /**
   * The change of this node's own disk was queued for it too: applied from its todo list, after the
   * changes queued before it (and at its next start, should it die first).
   */
  queued?: boolean;
}

export interface AttrChange {
  mode?: number;
  uid?: number;
  gid?: number;
  atime?: bigint;
  mtime?: bigint;
}

export interface NodeInfo {
  id: string;
  address: string;
  startedAt: number;
  /**
   * Its new versions wait for the file's watchers (setData, ChangeFeed.watchesHold). A node trusts
   * its watches only while every live node says so: an older one writes without waiting.
   */
  watches?: boolean;
}

/** What a node says of itself with each heartbeat. */
export interface NodeReport {
  /** Cache use by tier. */
  cache: { tier: string; bytes: number; files: number; limit: number }[];
  /** Bytes free on the disk of its root path (replicas go to the least full nodes first). */
  free?: number;
}

/** A node as the store knows it: alive while its heartbeat is current; when it last beat. */
export interface NodeState extends NodeInfo {
  alive: boolean;
  lastSeen?: number;
  report?: NodeReport;
}

/** A file's size, data version and holders, as the status scan sees it. */
export interface FileHoldings {
  ino: number;
  size: number;
  version: number;
  /** Its primary name's directory (its replica count is that directory's). */
  parent: number;
  holders: Holders;
}

/** One inode as `mcfs fsck` sees it: its record's fields that matter there, holders, and entries if a directory. */
export interface ScannedInode {
  ino: number;
  mode: number;
  size: number;
  nlink: number;
  version: number;
  /** Primary name (see Inode). */
  parent: number;
  name: string;
  /** Regular files only. */
  holders?: Holders;
  /** Directories only. */
  entries?: DirListing[];
}

/** What another node changed: caches holding these must let go. */
export interface Invalidation {
  /** Node that made the change. */
  origin: string;
  /** Names that appeared: [directory inode, name, the inode it names] (the inode where the change knows it). */
  added: ([number, string] | [number, string, number])[];
  /** Names that went away. */
  removed: [number, string][];
  /** Inodes whose attributes changed. */
  inodes: number[];
  /** Inodes whose bytes changed (copies elsewhere are stale). */
  data: number[];
  /** Nodes that have new entries in their todo list. */
  todo: string[];
  /**
   * Directories of inodes whose only change was a name added: [directory, its ctime and mtime now (ns,
   * decimal), its nlink now]. Every change in a directory moves its ctime forward (see touch in
   * lib.lua), so a node holding an older record of it may bring it up to date instead of reading it again.
   */
  touched?: [number, string, number][];
}

/** How a kept file names the inode whose bytes it holds, and how a queued change names its file. */
export const fileIdentity = (ino: number, gen: string): string => `${ino}:${gen}`;
/** How a node's local directory names the namespace directory it is (directories are never moved between inodes). */
export const dirIdentity = (ino: number): string => `${ino}:dir`;
/** The inode a file or directory identity names (NaN for none). */
export const inoOfIdentity = (id: string | undefined): number => Number(id?.split(":")[0]);

/**
 * A change of local files (namespace paths) that a node holding them must still make. id: the
 * identity (fileIdentity) of the file the change is meant for; a local file marked otherwise is another file.
 */
export type TodoEntry =
  /** last: the inode's last name; v: the version this node holds (decimal). */
  | { op: "rm"; path: string; id?: string; last?: boolean; v?: string }
  | { op: "rmdir"; path: string }
  | { op: "mv"; from: string; to: string; id?: string }
  /** A new hard link of a file this node holds: its bytes under one more name. */
  | { op: "link"; from: string; to: string; id?: string }
  | { op: "swap"; from: string; to: string }
  /** The copy at path is stale: remove it unless this node holds ino's current bytes again. */
  | { op: "drop"; path: string; ino: number; id?: string };

export interface Holders {
  /** Nodes with ino's bytes in their root path: data version of each copy. */
  data: Map<string, number>;
  /** Nodes with a copy in their cache, and the run (startedAt) that made it: a restart empties the cache. */
  cached: Map<string, { version: number; startedAt: number }>;
}

/** A node's records as they were before registerNode (raw, as stored; undefined: there was none). */
export interface PreviousRegistration {
  node?: string;
  seen?: string;
}

/** A create's arguments, as create takes them. */
export interface NewName {
  parent: number;
  name: string;
  init: NewInode;
}

/** The tree of names and inode records. Every change is atomic. */
export interface Namespace {
  /** Create the root directory if the namespace is new. */
  init(rootMode: number, uid: number, gid: number): Promise<void>;
  get(ino: number): Promise<Inode>;
  /** Records for many inodes in one round trip; missing ones are undefined. */
  getMany(inos: number[]): Promise<(Inode | undefined)[]>;
  lookup(parent: number, name: string): Promise<Inode>;
  create(parent: number, name: string, init: NewInode): Promise<Created>;
  /**
   * Several creates in one round trip, made in order as create would make them one after another:
   * for each, its answer, or the error create would have thrown (the others are made).
   */
  createMany(creates: NewName[]): Promise<(Created | Error)[]>;
  /** A new name for ino; its holders are told to link its primary path (a name they have) to the new one. */
  link(ino: number, newParent: number, newName: string): Promise<Linked>;
  /** The names of ino other than its primary one (hard links). */
  extraNames(ino: number): Promise<{ parent: number; name: string }[]>;
  /**
   * by: the uid of the caller whose kernel asked for it (omitted: the daemon's own change). In a sticky
   * directory only the owner of the file or of the directory, or root, may take a name away: the
   * caller's kernel checked that against the file it knew under the name, and another node may have
   * put another file there since, so it is checked again here against the one there now (EPERM).
   * only: the name goes only while it names this inode at this version (else ESTALE, nothing
   * changed): a repair acting on what it read before.
   */
  remove(parent: number, name: string, dir: boolean, by?: number, only?: { ino: number; version: number }): Promise<Unnamed>;
  /** by: as remove's, for both names a rename takes away (its source, and the target it replaces or exchanges). */
  rename(parent: number, name: string, newParent: number, newName: string, flags: number, by?: number): Promise<Renamed>;
  setAttrs(ino: number, change: AttrChange): Promise<Inode>;
  /**
   * New bytes: size and mtime set, a new version (given, or made here), holder made the only location
   * (path: where). acked: returns once the other live nodes have dropped what their kernels cached of
   * the old state (a truncate by path; a close's new bytes are read at the next open, close-to-open).
   * Either way it returns once the nodes watching ino (recordAndHolders with watch) have dropped what
   * they kept of it, or after the change feed's bound (see ChangeFeed.watchesHold): they answer opens
   * of it without asking, and must not answer one with the old version after this returns.
   */
  setData(ino: number, size: number, mtime: bigint, ctime: bigint, holder: string, path: string, opts?: { version?: number; acked?: boolean }): Promise<Inode>;
  /** Drop an inode whose link count reached zero. */
  purge(ino: number): Promise<void>;
  /**
   * Whether each inode was deleted (a file's record purged, a directory removed, in the last 30
   * days): a file or directory a node kept for an inode with no record was deleted meanwhile if so,
   * else the store lost its record.
   */
  deleted(inos: number[]): Promise<boolean[]>;
  /**
   * watch: this node is also made a watcher of the directory, atomically with the read: the next
   * name that comes into it (create, link, rename; made by another node) returns only once this
   * node has acknowledged its change (or after the change feed's bound), so that until then this
   * node may answer a lookup of a name missing from what it read, kept current by the change feed,
   * without asking (while watchesHold). It watches no more after that name.
   */
  listDir(ino: number, watch?: boolean): Promise<DirListing[]>;
}

/** Inode numbers: handed out once cluster-wide, also after the store lost writes. */
export interface InodeNumbers {
  /** Reserve count inode numbers for this node; returns the first. */
  reserveInodes(count: number): Promise<number>;
  /**
   * The inode counter as the store has it now, the highest inode number it handed this client, and
   * whether a create found the counter behind `above` since the last call.
   */
  inodeCounter(): Promise<{ counter: number; handedOut: number; wentBack: boolean }>;
  /** Changes whenever the store's server restarted (it may have come back without its last writes). */
  instanceId(): Promise<string>;
  /** Raise the inode counter to at least n: after the store lost writes, no number handed out may come again. */
  raiseInodeCounter(n: number): Promise<void>;
}

/**
 * The bytes one file's extended attributes may take in the store: each name with its NUL, and each
 * value. They live in Redis's memory, and any user may set them on a file of its own; bounded so,
 * the list of a file's names always fits the kernel's 64 KiB (XATTR_LIST_MAX), and a value of up to
 * 64 KiB less its name fits a file alone (ext4 keeps a block's worth).
 */
export const XATTRS_MAX = 65536;

/** Extended attributes of an inode. */
export interface ExtendedAttributes {
  getXattr(ino: number, name: string): Promise<Uint8Array | undefined>;
  /** ENOSPC when the file's attributes would take more than XATTRS_MAX bytes with it. */
  setXattr(ino: number, name: string, value: Uint8Array, flags: number): Promise<void>;
  listXattr(ino: number): Promise<string[]>;
  /** ENODATA when ino has no such attribute; ENOENT when ino is gone. */
  removeXattr(ino: number, name: string): Promise<void>;
}

/** What an open reads of a file (Placement.recordAndHolders). */
export interface RecordAndHolders {
  r: Inode;
  holders: Holders;
  unwatched?: true;
}

/** Which nodes hold a file's bytes, and which one may write them now. */
export interface Placement {
  /**
   * Take (or keep) the right to write ino's bytes on node, for ttlMs: false while another node has it.
   * Writers on different nodes take turns, so none of them loses what it wrote (appends above all).
   */
  takeWriteLease(ino: number, node: string, ttlMs: number): Promise<boolean>;
  /** Give the right back (only if node has it). */
  releaseWriteLease(ino: number, node: string): Promise<void>;
  /** Nodes holding the bytes of ino, with the data version each holds. */
  locations(ino: number): Promise<Map<string, number>>;
  /** Root-path holders and cached copies of ino, in one round trip. */
  holders(ino: number): Promise<Holders>;
  /**
   * ino's record and its holders as of one moment, in one round trip (what an open reads: close-to-open).
   * watch: this node is also made a watcher of ino, atomically with the read: the next new version
   * of it (setData) waits for this node's acknowledgement of its change, so that until then this node
   * may answer opens from what it read here (while watchesHold). unwatched: Redis refused to note the
   * watch (out of memory, it takes no writes): the record is answered all the same, not watched.
   */
  recordAndHolders(ino: number, watch?: boolean): Promise<RecordAndHolders>;
  /** recordAndHolders of each of inos in one round trip (with watch, of each that has a record); undefined where there is no record. */
  recordsAndHolders(inos: number[], watch?: boolean): Promise<(RecordAndHolders | undefined)[]>;
  /** For each copy, whether node holds that version of it in its root path. */
  heldBy(node: string, copies: { ino: number; version: number }[]): Promise<boolean[]>;
  /** List node's cached copies (those of a version no longer current are not); returns how many were. */
  addCachedCopies(node: string, startedAt: number, copies: { ino: number; version: number }[]): Promise<number>;
  /** Unlist node's cached copy of ino, if it is still listed at version. */
  dropCachedCopy(ino: number, node: string, version: number): Promise<void>;
}

/** How nodes hear what others changed, and the changes of local files queued for them. */
export interface ChangeFeed {
  /**
   * Hear other nodes' changes. resync is called when changes may have been missed (why: the channel was
   * down, "reconnected"; or a node stopped or restarted, "node gone", which may have made a change
   * whose message never went out, and which watchers would not hear of otherwise): every cache must
   * then be dropped. ack, when given, must be called once the changes are
   * applied (the kernel no longer has what they made stale): their origin is waiting for it. waiting:
   * a change of this node waits for acknowledgements meanwhile (its kernel may hold a directory's
   * lock for it, which the invalidation of a name in that directory needs). awaited: the origin's
   * wait counts this node (not when it let an earlier wait run out, or seemed gone): the changes do
   * not return before its ack, or ACK_WAIT_MS.
   */
  subscribe(onChanges: (invs: Invalidation[], ack?: () => void, waiting?: boolean, awaited?: boolean) => void, resync: (why: "reconnected" | "node gone") => void): Promise<void>;
  /** Take this node's todo list (the entries are removed from the store). */
  takeTodo(): Promise<TodoEntry[]>;
  /** Whether this node's todo list holds changes not yet taken (a path read before this may be of one). */
  todoWaiting(): Promise<boolean>;
  /**
   * Whether what this node watches (recordAndHolders with watch) still holds without asking: every
   * change another node made before a moment recent enough that its writer, which waits at least
   * that long for this node's acknowledgement, cannot have gone on without it, has reached onChanges.
   */
  watchesHold(): boolean;
  /**
   * listener hears how long from now (ms) watchesHold stays true, each time the feed is shown
   * current, and 0 when it stops being so otherwise: for what answers without asking this node's
   * JavaScript (the FUSE shim). A store whose watches hold without a time bound has none.
   */
  onWatchesHold?(listener: (forMs: number) => void): void;
}

/** The nodes of the cluster and whether each is live. */
export interface Membership {
  /** Every node that ever joined, by id, with whether its heartbeat is current. */
  nodes(): Promise<Map<string, NodeState>>;
  /** Join (or join again) as live; returns what it replaced, for withdrawNode. */
  registerNode(node: NodeInfo, ttlMs: number): Promise<PreviousRegistration>;
  /** Undo registerNode of a start that failed: the node's earlier records back, or none if it had none. */
  withdrawNode(nodeId: string, previous: PreviousRegistration): Promise<void>;
  heartbeat(nodeId: string, ttlMs: number, report?: NodeReport): Promise<void>;
  /** A clean leave: the node stops being live but stays known. */
  unregisterNode(nodeId: string): Promise<void>;
}

/** A node is asked to take a copy of a file's bytes at a version into its root path (a replica). */
export interface CopyOrder {
  ino: number;
  version: number;
  /** Where the file was when asked (the namespace's current path is the one used). */
  path: string;
}

/** Extra copies of files on other nodes' disks (replicas), and the cluster-wide settings asking for them. */
export interface Replication {
  /** A cluster-wide setting by name (undefined: never set). */
  setting(name: string): Promise<string | undefined>;
  setSetting(name: string, value: string): Promise<void>;
  /** Add an order to node's list of copies to make. */
  queueCopy(node: string, order: CopyOrder): Promise<void>;
  /**
   * Up to max of the copies asked of node, oldest first, left on its list until copyDone: a node that
   * dies making one finds it again at its restart, and meanwhile the repair sees it asked for.
   */
  nextCopies(node: string, max: number): Promise<CopyOrder[]>;
  /** An order nextCopies gave is done with (made, not needed, or failed: the repair asks again then). */
  copyDone(node: string, order: CopyOrder): Promise<void>;
  /** Copies asked for and not done yet, per node (nodes with none are left out). */
  copyOrders(): Promise<Map<string, CopyOrder[]>>;
  /** List node as holding ino's bytes at version, if that is still the file's version (else false: the copy is stale). */
  addHolder(ino: number, node: string, version: number): Promise<boolean>;
  /** Take or renew the lease of the node that repairs missing replicas (one at a time in the cluster). */
  takeRepairLease(node: string, ttlMs: number): Promise<boolean>;
}

/** Whole-store scans and repairs for `mcfs status`, `mcfs fsck` and `mcfs forget`. */
export interface AdminScans {
  /**
   * Every file with bytes somewhere, in batches (for `mcfs status`); progress: files seen so far and
   * the highest inode number handed out (an upper bound of the files).
   */
  scanFiles(onBatch: (files: FileHoldings[]) => void, onProgress?: (seen: number, bound: number) => void): Promise<void>;
  /**
   * Remove a node for good (its disk is gone): from the membership, every file's holders and cached
   * copies, and its todo list. Returns how many files it held and how many now have no copy at all.
   */
  forgetNode(nodeId: string, onProgress?: (seen: number, bound: number) => void): Promise<{ held: number; orphaned: number }>;
  /** Every inode record, in batches (for `mcfs fsck`); progress as for scanFiles. */
  scanInodes(onBatch: (inodes: ScannedInode[]) => void, onProgress?: (seen: number, bound: number) => void): Promise<void>;
  /** The inodes listed as having no names left (kept while open somewhere). */
  orphans(): Promise<number[]>;
  /**
   * Unlist node as a root-path holder of ino if it is still listed at exactly version and the reason
   * still holds: "stale", the record is at another version; "unknown", the node is no member;
   * "absent", the node does not have the file (checked on its disk). Returns whether it was unlisted.
   */
  dropHolder(ino: number, node: string, version: number, why: "stale" | "unknown" | "absent"): Promise<boolean>;
  /** Remove the entry name of directory parent if it still names ino and ino has no record. Returns whether it did. */
  dropDanglingEntry(parent: number, name: string, ino: number): Promise<boolean>;
  /**
   * Settle an entry of the orphans set that fsck found wrong: "unlisted" when its record has links
   * again, "purged" when it has no record left, or nlink 0 and no node is live (none can have it
   * open), else "kept".
   */
  settleOrphan(ino: number): Promise<"unlisted" | "purged" | "kept">;
}

/** Metadata and namespace, shared by all nodes. */
export interface MetadataStore extends Namespace, InodeNumbers, ExtendedAttributes, Placement, ChangeFeed, Membership, AdminScans, Replication {
  close(): Promise<void>;
}
