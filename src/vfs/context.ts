import type { DirMarks } from "./dir-marks.ts";
import type { OpenWatches, Watched } from "./open-watches.ts";
import type { Caller, SeenFile, ShimCreates, ShimEntries, ShimGrants } from "../fuse/types.ts";
import type { OpenGrants } from "./open-grants.ts";
import type { LocalDir } from "../local/local-dir.ts";
import type { Holders, Inode, MetadataStore, Removed } from "../meta/store.ts";
import type { Logger } from "../util/log.ts";
import type { RecentSet } from "../util/recent-set.ts";
import type { RwLock } from "../util/rw-lock.ts";
import type { DataChanges } from "./data-changes.ts";
import type { LocalState } from "./open-files.ts";
import type { InodeNumbers } from "./inode-numbers.ts";
import type { KernelView } from "./kernel-view.ts";
import type { MetaCache } from "./meta-cache.ts";
import type { Handle, OpenFiles } from "./open-files.ts";
import type { PathCache } from "./paths.ts";
import type { RemoteData } from "./remote-data.ts";
import type { WritePolicy } from "./write-policy.ts";
import type { WriteTurns } from "./write-turns.ts";

export interface VfsOptions {
  /** This node's root path, every local operation confined to it. */
  root: LocalDir;
  nodeId: string;
  store: MetadataStore;
  log: Logger;
  /** How long a fetched record may answer getattr again (the kernel's attribute timeout). */
  attrCacheMs: number;
  /** Fetches other nodes' bytes; absent on a sole node (a private Redis no other node shares). */
  remote?: RemoteData;
  /** Apply other nodes' pending renames and deletes to the local disk (when a held file is missing). */
  catchUp?: () => Promise<void>;
  /** Whether changes taken from this node's list may not be made on its disk yet (catchUp waits for them). */
  applying?: () => boolean;
  /** Resolves once what applying answers true for is done; begins nothing. */
  applied?: () => Promise<void>;
  /** The lock of VfsContext.localDirs, shared with what applies catchUp's renames (local-todo.ts). */
  localDirs: RwLock;
  /** The node's watches, shared with its read-ahead (remote); the VFS makes its own without. */
  watches?: OpenWatches<Watched>;
  /** A reader's open was answered from what this node watches of its file (no round trip to the store). */
  watchedOpen?: () => void;
  /** Make the kernel forget the attributes it cached for ino; resolves once it has. */
  refreshKernelAttrs?: (ino: number) => Promise<void>;
  /** Make the kernel forget the attributes and pages it cached of ino. */
  dropKernelInode?: (ino: number) => void;
  /** An entry reply naming ino is on its way to the kernel (see KernelView.answering). */
  entryAnswering?: (ino: number) => void;
  /**
   * ino, open for writing here, has setuid or setgid now, though this kernel has not been told
   * (another node's chmod): its writes must take them. path: where it is in the namespace, if known.
   */
  privileged?: (ino: number, path?: string) => void;
  /** The shim stops serving fh's reads from its fd: they come to JS. */
  detachHandle?: (fh: number) => void;
  /** The shim serves fh's reads from fd, of its first bytes (all of them if whole). */
  followHandle?: (fh: number, fd: number, bytes: number, whole: boolean) => void;
  /** JS changed fh's file itself: its flush must come to JS though the shim saw no write. */
  dirtyHandle?: (fh: number) => void;
  /** The shim saw fh written since its last flush or release. */
  handleWritten?: (fh: number) => boolean;
  /** Names the FUSE shim may answer lookups of itself: kept for prefetched records, dropped with them. */
  shimEntries?: ShimEntries;
  /** Files the FUSE shim may make itself (a sole node's): it is handed what it needs for them. */
  shimCreates?: ShimCreates;
  /** Read-only opens the FUSE shim may answer itself (a cluster node's, of files it watches). */
  shimGrants?: ShimGrants;
  /** Take in now the opens (and closes) the shim answered itself and queued. */
  takeShimNotes?: () => void;
  /** Make the kernel forget names it may hold; resolves once it has (false: not in time). */
  forgetKernelNames?: (names: [number, string][]) => Promise<boolean>;
  /** Make the kernel forget a name it cached (it now leads to another file). */
  dropKernelEntry?: (parent: number, name: string) => void;
  /** The last name of a file held here goes: true when its bytes were kept for readers elsewhere. */
  retire?: (path: string, ino: number, version: number) => boolean;
  /**
   * The last name of a file held here (at version) went: noted (DeletionJournal) as its bytes go. Not
   * waited for: the note's write is issued first, and without an fsync a wait would order nothing a
   * power cut keeps (the journal is for Redis losing what this node's disk kept).
   */
  deleting?: (ino: number, version: number) => void;
  /** This node published a version of a file (its close): replicas of it may be wanted elsewhere. */
  published?: (r: Inode, path: string) => void;
  /** An extended attribute is about to be set by c: may refuse it (an FsError). */
  xattrSetting?: (c: Caller, ino: number, name: string, value: Uint8Array) => Promise<void>;
  /**
   * A file this node is publishing has no record, and the store has no trace of its deletion (Redis
   * lost its create): put what this node holds back in the namespace; resolves once done.
   */
  recordLost?: (ino: number) => Promise<void>;
  /** Whether a write in JS may take bytes more of the root's disk (false: ENOSPC, the room is kept for metadata). */
  roomFor?: (bytes: number) => boolean;
  /** Bytes read or written in JS (the shim counts what it serves itself). */
  onIo?: (kind: "read" | "write", bytes: number) => void;
}

/** What the operations of one node's VFS share. */
export interface VfsContext {
  readonly o: VfsOptions;
  readonly store: MetadataStore;
  readonly root: LocalDir;
  readonly nodeId: string;
  readonly log: Logger;
  readonly paths: PathCache;
  readonly cache: MetaCache;
  readonly open: OpenFiles;
  readonly kernel: KernelView;
  readonly changes: DataChanges;
  readonly turns: WriteTurns;
  readonly inos: InodeNumbers;
  readonly policy: WritePolicy;
  /** Unlinked while open here: purged at the last close. */
  readonly purgeOnClose: Set<number>;
  /** Read-only opens granted to the FUSE shim (a cluster node's). */
  readonly grants?: OpenGrants;
  /**
   * Creates by path hold it shared from the path they read to the file made; a rename that may move
   * directories holds it alone, here or applied from another node's (local-todo.ts).
   */
  readonly localDirs: RwLock;
  /**
   * fn with ino's path, to make something new there on this disk: under localDirs (shared), once the
   * changes this node has heard of are made on its disk. A path read from caches that have heard of
   * a rename leads a disk that has not: what is made there would land in the directory in its place
   * (one a swap then moves elsewhere). A path read from caches behind the disk (a record fetched
   * before a move made here since) is caught by the mark on the local directory there (dirMarks).
   */
  makingAt<T>(ino: number, fn: (path: string) => Promise<T>): Promise<T>;
  /** Which local directory is which namespace directory's. */
  readonly dirMarks: DirMarks;
  /** Files this node made or published lately (it held their bytes then): never fetched ahead from others. */
  readonly writtenHere: RecentSet<number>;
  /** Remember a fresh record (also as the open-file state when the inode is open here); named: see MetaCache.learn. */
  learn(r: Inode, named?: boolean): Inode;
  /** r, a change made here that the store has yet to get (written behind), learned: no answer asked before takes it back. */
  learnAhead(r: Inode): Inode;
  /**
   * r, the store's answer to a change made here, learned: no watch read asked before it is kept (its
   * answer, taken in after this one, would bring back the file as it was before the change).
   */
  learnChange(r: Inode): Inode;
  /** The record of an inode: from the open-file state when open here, a recent fetch, else the store. */
  record(ino: number): Promise<Inode>;
  /** The record of an inode from the store (learned); a file or directory open here whose record went since (removed) answers with its last one, no link left. */
  current(ino: number): Promise<Inode>;
  /**
   * An error of a call about ino, as the kernel is to get it: ESTALE where the store had no record of
   * it (gone on another node), which makes the kernel walk the path again; the lookups of that walk
   * must not find ino in this node's caches, so it is forgotten here.
   */
  gone(e: unknown, ino: number): unknown;
  /**
   * fn, acting on inode ino (a file, or the directory a name is made in), which the kernel found by a
   * path: on a cluster node, ino gone on another node since the kernel looked its name up (a rename
   * over it, an unlink) is ESTALE (gone), NFS's answer, which makes the kernel walk the path again and
   * act on what the name is now, or find none.
   */
  onInode<T>(ino: number, fn: () => Promise<T>): Promise<T>;
  /**
   * Publish the bytes of an open file: size, mtime, new version, this node as holder. With cutTo:
   * the file cut to that size, the store asked first, so that a cut it refuses leaves every byte on the disk.
   * seen: the file as the shim found it at the flush or release this commit is for (see OpenInode.committed).
   */
  commit(h: Handle, cutTo?: number, seen?: SeenFile): Promise<Inode>;
  /** fn, a change of ino's size outside its handles (a truncate by path), run one at a time with its commits. */
  resizing<T>(ino: number, fn: () => Promise<T>): Promise<T>;
  /**
   * This node's own file of r.ino (open as fd) changed in place and was published as r: readers of it
   * here read r's version now. state: what of the file r has (its ctime and size), or "cut" (truncated).
   */
  changedInPlace(fd: number, r: Inode, state: LocalState | "cut"): void;
  /** A name went: forget the inode, and purge it when it has no name and nothing here holds it open. */
  dropped(r: Removed | undefined): Promise<void>;
  /** Undo the namespace half of a create whose local half failed. */
  rollback(parent: number, name: string, dir: boolean): Promise<void>;
  /** One more local name for the bytes at from; the namespace has the name already, so a failure is only logged. */
  linkLocal(from: string, to: string): void;
  /** After this node took an inode's bytes: they go under every name it has (hard links), not only the first. */
  linkAllNames(ino: number, primary: string): Promise<void>;
  /**
   * This node's own file of r at path, about to be written: made empty, or from its holders' bytes.
   * It takes the place of what is at path, unless that is another file the namespace has at path
   * now (ESTALE then: see replacingStale). asWritten: the bytes as its holder's writer has them
   * now (see RemoteData.fetchTo).
   */
  takeHere(r: Inode, path: string, empty: boolean, holders?: Holders, asWritten?: boolean): Promise<void>;
}
