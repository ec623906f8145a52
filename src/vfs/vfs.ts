import * as fs from "node:fs";
import { dirname } from "node:path";
import type { FileSystem, SeenFile } from "../fuse/types.ts";
import { futimes } from "../local/local-dir.ts";
import type { Inode, Invalidation, MetadataStore } from "../meta/store.ts";
import { E, errnoOf, staleIfGone } from "../util/errno.ts";
import { createRecentSet } from "../util/recent-set.ts";
import { changeTime, nowNs } from "../util/time.ts";
import { isDir } from "./attr.ts";
import { isReg, S_ISGID, S_ISUID } from "../util/file-mode.ts";
import type { VfsContext, VfsOptions } from "./context.ts";
import { createDataChanges } from "./data-changes.ts";
import { createDirMarks } from "./dir-marks.ts";
import { createDirOps } from "./dir-ops.ts";
import { createFileOps } from "./file-ops.ts";
import { createShimKits } from "./shim-kits.ts";
import { createInodeNumbers } from "./inode-numbers.ts";
import { createKernelView, type RaceMarks } from "./kernel-view.ts";
import { createLocalFile, linkLocal, liveIn, replacingStale } from "./local-files.ts";
import { createMetaCache, type MetaMirror } from "./meta-cache.ts";
import { checkRoom, createNamespaceOps } from "./namespace-ops.ts";
import { createOpenFiles, CUT_STATE, type Handle } from "./open-files.ts";
import { createWatches, endingWith } from "./open-watches.ts";
import { createOpenGrants } from "./open-grants.ts";
import { createPathCache } from "./paths.ts";
import { createWriteAtClose, createWriteBehind } from "./write-policy.ts";
import { createHeldCreates } from "./held-creates.ts";
import { createCurrentAnswers } from "./current-answers.ts";
import { createWriteTurns } from "./write-turns.ts";
import { createXattrOps } from "./xattr-ops.ts";
import { createKeyedQueue } from "../util/keyed-queue.ts";

/** The namespace's root: its local directory is the root path itself. */
const ROOT_INO = 1;
/** How many of the files this node wrote last it keeps out of read-ahead batches (a few MB of memory). */
const WRITTEN_HERE_KEPT = 100_000;

export type { VfsOptions } from "./context.ts";

export interface Vfs extends FileSystem {
  /**
   * Another node changed these: drop what this node cached of them. Resolves once the records of the
   * files open here among them were read again, and a new owner or mode was dropped from the kernel
   * (queued: the node acknowledges the change only after that).
   */
  invalidate(inv: Invalidation): Promise<void>;
  /** Changes may have been missed: drop every cache. */
  resync(): void;
  /** Directories moved on the local disk: drop every directory's path cached (each is read from the store again). */
  forgetPaths(): void;
  /** Another node changed ino: whether the kernel's cache of it must be dropped now (see KernelView.changedElsewhere). */
  kernelChanged(ino: number): boolean;
  /** Whether the kernel may cache the name parent/name: only those need invalidating. */
  kernelMayHaveEntry(parent: number, name: string): boolean;
  /** Other nodes' changes heard now (until: undefined unless they wait for this node): see KernelView.racing (before invalidate). */
  kernelRacing(invs: Invalidation[], until: number | undefined): RaceMarks;
  /** The kernel dropped the names marked in time: see KernelView.settled. */
  kernelSettled(marks: RaceMarks): void;
  /** Acknowledged before the kernel dropped the names marked: see KernelView.late. */
  kernelLate(marks: RaceMarks): void;
  /** Everything the kernel may cache, to drop (a change may have gone unheard, or files have other numbers now): see KernelView.takeAll. */
  takeKernelState(): { names: [number, string][]; inodes: number[] };
  /** Whether ino is open for writing on this node. */
  writing(ino: number): boolean;
  /**
   * The daemon's redo of a deletion Redis lost (redoLostDeletions): name goes only while it names
   * only.ino at only.version (else ESTALE), as unlink but for this node's disk, which no longer has
   * that file (whatever is at its path is another's).
   */
  unlinkLost(parent: number, name: string, only: { ino: number; version: number }): Promise<void>;
  /**
   * For a read of ino's root file that must not see a write: a check, true while no write of the
   * file has begun here since this call (false from the start if one is under way). version: see
   * OpenFiles.steady.
   */
  steady(ino: number, version?: number, asWritten?: boolean): () => boolean;
  /** See OpenFiles.liveSize. */
  liveSize(ino: number, version: number, asWritten?: boolean): number | undefined;
  /** A copy fetched ahead of any reader arrived whole into the cache (see FileOps.copyLanded). */
  copyLanded(ino: number, version: number): void;
  /** The cache let go of ino's copy (evicted, or moved to another tier): a grant of its bytes goes. */
  copyGone(ino: number): void;
  /** Close every open backing file, and send the creates held (at shutdown). */
  closeAll(): Promise<void>;
  /** The store as this filesystem uses it: what it made is in it before each call (held-creates.ts). */
  readonly store: MetadataStore;
  readonly openFiles: number;
}

/**
 * The filesystem one node mounts: the namespace in the metadata store, bytes in the node's root path
 * or fetched from the nodes holding them. Wires the shared state (context.ts) to the operations
 * (namespace-ops, file-ops, dir-ops, xattr-ops); a sole node writes its metadata behind (write-policy).
 */
export function createVfs(o: VfsOptions): Vfs {
  const { root, nodeId, log } = o;
  const answers = createCurrentAnswers(o.store);
  const held = createHeldCreates(answers.store, undefined, !o.remote);
  const store = held.store;
  const paths = createPathCache(store);
  const shim = o.shimEntries;
  const open = createOpenFiles(shim?.dropInode);
  const policy = o.remote ? createWriteAtClose(held) : createWriteBehind(held);
  const inos = createInodeNumbers(store);
  // The shim makes files where the policy takes them in: a sole node's names are free by its listings,
  // a cluster node's by the store's answer to the kernel's lookup just before (creates.c).
  const kits = o.shimCreates && policy.adopt ? createShimKits({ creates: o.shimCreates, inos, open, root, log }) : undefined;
  // The shim answers prefetched names itself, with the attributes a lookup would get here; never an
  // open file's (skipPrefetch keeps those out: their attributes are the handles', see KernelView.attr).
  const mirror: MetaMirror | undefined = shim && {
    prefetched(dir, named, ttlMs) {
      shim.keep(dir, named.map(([name, r]) => [name, ctx.kernel.told(dir, name, r)]), ttlMs);
    },
    learned(r, ttlMs) {
      // Directories only: a file's attributes go with its opens (version checks, the handles' sizes).
      const a = isDir(r.mode) ? ctx.kernel.given(r) : undefined;
      if (a) shim.keepAttrs([a], ttlMs);
      else shim.dropInode(r.ino);
    },
    dropName: shim.drop,
    dropInode: shim.dropInode,
    dropDir: shim.dropDir,
    dropAll: shim.dropAll,
    // Only complete listings tell the shim which names are missing: a sole node's, a cluster node's
    // of the directories it watches (meta-cache), while the store says watches hold.
    listed(dir: number, names: Iterable<string>) {
      kits?.unlisted(dir);
      shim.list(dir, names);
    },
    listChanged: shim.listName,
    unlisted(dir: number) {
      kits?.unlisted(dir);
      shim.unlist(dir);
    },
    unlistedAll() {
      kits?.unlistedAll();
      shim.unlistAll();
    },
  };
  if (shim && o.remote) store.onWatchesHold?.(shim.trustFor);
  // The shim's opens from grants go with the watches they stand on (file-ops grant).
  const grants = o.remote && o.shimGrants ? createOpenGrants(o.shimGrants, () => open.reserveFh()) : undefined;
  const watches = grants ? endingWith(o.watches ?? createWatches(), (ino) => (ino === undefined ? grants.clear() : grants.revoke(ino))) : o.watches;
  const cache = createMetaCache({ store, paths, attrCacheMs: o.attrCacheMs, skipPrefetch: (ino) => open.inode(ino) !== undefined, onDirChanged: open.dirChanged, watchDirs: !!o.remote, ...(mirror ? { mirror } : {}), ...(watches ? { watches } : {}) });
  const changes = createDataChanges();
  const purgeOnClose = new Set<number>();
  const writtenHere = createRecentSet<number>(WRITTEN_HERE_KEPT);

  function learn(r: Inode, named = true): Inode {
    inos.seen(r.ino);
    const entry = open.inode(r.ino);
    if (entry) entry.rec = r;
    if (kits && isDir(r.mode)) kits.learned(r);
    return cache.learn(r, named);
  }

  const dirMarks = createDirMarks(o.root);
  /** paths.dirNamesRead when this node's list was last seen empty with nothing being applied. */
  let inStepAt = 0;

  async function makingAt<T>(ino: number, fn: (path: string) => Promise<T>): Promise<T> {
    /** Names read from the store again: those cached led to a local directory not marked as theirs, or to none. */
    let fresh = false;
    for (;;) {
      // Waited for, never begun here: creates that each began one would keep the others waiting.
      while (o.applying?.()) await o.applied?.();
      let behind = false;
      let recheck = false;
      const made = await o.localDirs.shared(async () => {
        const path = await paths.pathOf(ino, fresh);
        // A directory's name read from the store since may be of a rename whose move is still on
        // this node's list (its notice on the way): taken and made first.
        const read = paths.dirNamesRead;
        if (o.remote && (fresh || read !== inStepAt)) {
          behind = await store.todoWaiting();
          if (!behind && !o.applying?.()) inStepAt = read;
        }
        if (behind || o.applying?.()) return undefined;
        const parent = paths.parentOf(ino);
        const at = dirname(path);
        const local = parent === undefined || parent === ROOT_INO ? "ok" : dirMarks.check(at, parent);
        if (local !== "ok" && !fresh) {
          log.debug({ op: "create", path, ino, dir: parent, local }, "a directory's path read from caches leads to no local directory, or to another's: its names are read again");
          recheck = true;
          return undefined;
        }
        // Read again with every move heard of made, the path is where the disk has the directory: one
        // marked otherwise was moved outside this node's list (an entry Redis lost; the start-up scan
        // moved the files in it to where the namespace has them).
        if (local === "other") log.warn({ op: "create", path, ino, dir: parent }, "the local directory at a directory's path was marked as another's: marked as its own");
        const out = await fn(path);
        if (local !== "ok") dirMarks.mark(at, parent!);
        return { out };
      });
      if (made) return made.out;
      if (recheck) fresh = true;
      if (behind) await o.catchUp?.();
    }
  }

  /**
   * Where the file a writer here has open is in the namespace, its file here moved there if it is
   * not: moved since by another node, which moves only the files of the nodes listed as its
   * holders, and this one is not yet. As something made there (makingAt): a move read from caches
   * ahead of the disk would put it in the directory a rename then takes elsewhere.
   */
  async function followed(h: Handle): Promise<string> {
    if (h.at !== undefined && h.at === (await paths.pathOf(h.ino))) return h.at;
    return makingAt(h.ino, async (path) => {
      const now = root.whereIs(h.fd);
      if (now !== undefined && now !== path) {
        try {
          root.ensureDir(dirname(path));
          root.rename(now, path);
        } catch (e) {
          log.error({ op: "publish", path, from: now, ino: h.ino, err: (e as Error).message }, "a file written here could not follow its rename: its close publishes a path without it");
        }
      }
      h.at = path;
      return path;
    });
  }

  /** Commits one at a time per file (ctx.commit). */
  const committing = createKeyedQueue<number>();

  /**
   * The file's size and times for a commit: what the shim found (seen) when nothing but the shim's
   * passthrough wrote it (no write here through h, no other writer here) and nothing newer was
   * published (OpenInode.committed); else its fstat, here.
   */
  function localState(h: Handle, cutTo: number | undefined, seen: SeenFile | undefined): { size: bigint; mtimeNs: bigint; ctimeNs: bigint; atimeNs?: bigint } {
    const last = open.inode(h.ino)?.committed;
    if (seen && cutTo === undefined && !h.dirty && !open.hasWriter(h.ino, h) && (!last || (seen.ctimeNs >= last.ctimeNs && seen.size >= last.size))) return { size: BigInt(seen.size), mtimeNs: seen.mtimeNs, ctimeNs: seen.ctimeNs };
    return fs.fstatSync(h.fd, { bigint: true });
  }

  /** Publish what was written through h (cutTo: truncated to that size instead): ctx.commit, one at a time per file. */
  async function commitNow(h: Handle, cutTo?: number, seen?: SeenFile): Promise<Inode> {
    const st = localState(h, cutTo, seen);
    h.dirty = false;
    const path = await followed(h);
    const now = nowNs();
    // The change happened when the file last changed (an ftruncate, a write), not when it is published.
    const p = cutTo === undefined ? { size: Number(st.size), mtime: st.mtimeNs, ctime: changeTime(st.ctimeNs, open.inode(h.ino)?.rec.ctime ?? 0n) } : { size: cutTo, mtime: now, ctime: now };
    // The kernel's view of the file was the version this writer began from: every change since went through it.
    const from = open.inode(h.ino)?.rec.version;
    const current = cutTo === undefined && from !== undefined && ctx.kernel.versionOf(h.ino) === from;
    const r = await ctx.policy.publish(ctx, { ino: h.ino, ...p, path });
    if (current) ctx.kernel.wroteHere(h.ino, from, r.version);
    if (cutTo !== undefined) {
      fs.ftruncateSync(h.fd, cutTo);
      // The disk's mtime is the record's: the next start takes a file whose mtime differs for a change the store missed.
      futimes(h.fd, st.atimeNs!, now);
    }
    // Moved by another node before this node was its holder, and heard of only now (the record
    // published has its current name): a rename from now on reaches this node as a holder.
    const at = await followed(h);
    // Linked under other names since it was opened: as the holder now, this node has the bytes under each.
    if (o.remote && h.at !== undefined && r.nlink > 1) await ctx.linkAllNames(h.ino, at);
    ctx.changedInPlace(h.fd, r, cutTo === undefined ? { ctimeNs: st.ctimeNs, size: Number(st.size) } : "cut");
    writtenHere.add(r.ino);
    o.published?.(r, at);
    return r;
  }

  const ctx: VfsContext = {
    o, store, root, nodeId, log, paths, cache, open, changes, inos, purgeOnClose, writtenHere,
    ...(grants ? { grants } : {}),
    localDirs: o.localDirs,
    makingAt,
    dirMarks,
    kernel: createKernelView({
      open,
      ...(o.dropKernelEntry ? { dropKernelEntry: o.dropKernelEntry } : {}),
      ...(o.dropKernelInode ? { dropKernelInode: o.dropKernelInode } : {}),
      ...(o.forgetKernelNames ? { forgetNames: o.forgetKernelNames } : {}),
      ...(shim ? { refused: shim.dropInode } : {}),
      ...(o.entryAnswering ? { answering: o.entryAnswering } : {}),
      // The shim's opens refresh nothing: one of a version whose attributes the kernel may not hold goes to JS (file-ops grant).
      ...(grants
        ? {
            toldVersion: (ino: number, version: number) => {
              const granted = grants.versionOf(ino);
              if (granted !== undefined && granted !== version) grants.revoke(ino);
            },
          }
        : {}),
    }),
    turns: createWriteTurns({ store, nodeId, log, changes }),
    policy,
    learn,
    learnAhead(r) {
      answers.changedHere(r.ino);
      return learn(r, false);
    },
    learnChange(r) {
      cache.watches.changing(r.ino);
      return learn(r);
    },
    async record(ino) {
      return open.inode(ino)?.rec ?? cache.fresh(ino) ?? ctx.current(ino);
    },
    gone(e, ino) {
      const stale = staleIfGone(e, ino);
      if (stale !== e) cache.forget(ino);
      return stale;
    },
    onInode(ino, fn) {
      return o.remote
        ? fn().catch((e: unknown) => {
            throw ctx.gone(e, ino);
          })
        : fn();
    },
    async current(ino) {
      try {
        return learn(await store.get(ino));
      } catch (e) {
        if (errnoOf(e) !== E.ENOENT) throw e;
        // Unlinked on another node, which had it open nowhere: its record went, its handles here stay.
        const file = open.inode(ino)?.rec;
        if (file) return file.nlink === 0 ? file : { ...file, nlink: 0 };
        const removed = open.dirRecord(ino);
        if (!removed) throw e;
        return removed.nlink === 0 ? removed : { ...removed, nlink: 0, size: 0 };
      }
    },
    commit(h: Handle, cutTo?: number, seen?: SeenFile) {
      // One at a time per file: each reads the size and sends it after the one before, so the last
      // sent (which Redis keeps) is never an older size than one sent before it.
      return committing.run(h.ino, () => commitNow(h, cutTo, seen));
    },
    resizing(ino, fn) {
      return committing.run(ino, fn);
    },
    changedInPlace(fd, r, state) {
      // Readers here of the same file read what it holds now: this version (not those of a file the
      // writer's open replaced, whose bytes stay what they were).
      open.published(r.ino, r.version, r.size);
      const entry = open.inode(r.ino);
      if (!entry) return;
      entry.ownVersion = r.version;
      entry.committed = state === "cut" ? CUT_STATE : state;
      let st: fs.BigIntStats | undefined;
      for (const other of entry.handles.keys()) {
        if (!other.reads || other.reads.copy || other.fd < 0) continue;
        st ??= fs.fstatSync(fd, { bigint: true });
        const same = fs.fstatSync(other.fd, { bigint: true });
        if (same.ino === st.ino && same.dev === st.dev) other.reads = { version: r.version, size: r.size, copy: false };
      }
    },
    async dropped(r) {
      if (!r) return;
      cache.forget(r.ino);
      // Still open here: fstat on a descriptor must see the name count the store now has.
      const entry = open.inode(r.ino);
      if (entry && !r.dir) entry.rec = { ...entry.rec, nlink: r.nlink, ctime: nowNs() };
      if (r.dir || r.nlink > 0) return;
      if (entry) purgeOnClose.add(r.ino);
      else await store.purge(r.ino);
    },
    async rollback(parent, name, dir) {
      await store.remove(parent, name, dir).catch((e: unknown) => log.error({ err: e, parent, name }, "rollback of a failed create left an entry"));
    },
    linkLocal: (from, to) => linkLocal(root, from, to, log),
    async takeHere(r, path, empty, holders, asWritten) {
      const liveAt = liveIn(store);
      if (empty) return fs.closeSync(await replacingStale(root, path, r.ino, liveAt, () => createLocalFile(root, path, fs.constants.O_WRONLY, r)));
      root.ensureDir(dirname(path));
      const place = (tmp: string, into: string) => replacingStale(root, into, r.ino, liveAt, () => root.rename(tmp, into));
      await o.remote!.fetchTo(r.ino, r.version, path, r.size, r, { ...(holders ? { holders } : {}), place, asWritten: !!asWritten });
    },
    async linkAllNames(ino, primary) {
      for (const { parent, name } of await store.extraNames(ino)) {
        const p = await paths.childPath(parent, name).catch(() => undefined);
        if (p && p !== primary) linkLocal(root, primary, p, log);
      }
    },
  };

  return {
    ...createNamespaceOps(ctx),
    ...createFileOps(ctx, kits),
    ...createDirOps(ctx),
    ...createXattrOps(store, { ...(o.xattrSetting ? { setting: o.xattrSetting } : {}), room: () => checkRoom(ctx), ...(o.remote ? { onInode: ctx.onInode } : {}) }),
    store,
    get openFiles() {
      return open.count;
    },
    steady: open.steady,
    liveSize: open.liveSize,
    copyGone: (ino) => grants?.revoke(ino),
    writing(ino) {
      // From the write turn on: an open for writing is under way before its handle exists.
      return ctx.turns.has(ino) || open.hasWriter(ino) || open.writingOutside(ino);
    },
    invalidate(inv) {
      answers.heard(inv);
      cache.invalidate(inv);
      ctx.kernel.heard(inv.inodes);
      changes.changed([...inv.data, ...inv.inodes]);
      const reread: Promise<void>[] = [];
      for (const ino of inv.inodes) {
        if (!open.inode(ino)) continue;
        reread.push(store.get(ino).then((r) => {
          learn(r);
          if (ctx.kernel.permsChanged(r)) o.dropKernelInode?.(ino);
          if (isReg(r.mode) && r.mode & (S_ISUID | S_ISGID) && open.hasWriter(ino)) {
            void ctx.paths.pathOf(ino).then(
              (path) => o.privileged?.(ino, path),
              () => o.privileged?.(ino),
            );
          }
        }, () => {}));
      }
      return Promise.all(reread).then(() => {});
    },
    forgetPaths() {
      paths.forgetDirs();
      dirMarks.moved();
    },
    resync() {
      answers.missed();
      cache.resync();
    },
    kernelChanged: (ino) => ctx.kernel.changedElsewhere(ino),
    kernelMayHaveEntry: (parent, name) => ctx.kernel.mayHaveEntry(parent, name),
    // Each change's names with its own inodes: one change's name must not mark another's file.
    kernelRacing: (invs, until) => invs.flatMap((inv) => ctx.kernel.racing([...inv.removed, ...inv.added], new Set(inv.inodes), until)),
    kernelSettled: (marks) => ctx.kernel.settled(marks),
    kernelLate: (marks) => ctx.kernel.late(marks),
    takeKernelState: () => ctx.kernel.takeAll(),
    async closeAll() {
      for (const [fh, h] of open.all()) {
        // Written through the shim and never released (the kernel drops the releases an unmount
        // overtakes): published as its release would have.
        if (h.dirty || o.handleWritten?.(fh)) await ctx.commit(h).catch(() => {});
        // Released while that commit ran: its release closed the fd.
        if (h.fd < 0) continue;
        // Once closed, the number may be another file's: the shim and every handler still running stop using it first.
        o.detachHandle?.(fh);
        const fd = h.fd;
        h.fd = -1;
        try {
          fs.closeSync(fd);
        } catch {
          // already closed
        }
      }
      open.clear();
      held.flush();
    },
  };
}
