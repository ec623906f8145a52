import type { Caller } from "../fuse/types.ts";
import { newGeneration, newVersion, type Created, type Inode, type NewInode } from "../meta/store.ts";
import { constants } from "node:fs";
import { nowNs } from "../util/time.ts";
import { FsError, fsError, OutcomeUnknown, StoreUnavailable, toErrno } from "../util/errno.ts";
import { isDir, S_IFREG, S_ISGID } from "./attr.ts";
import type { VfsContext } from "./context.ts";
import type { HeldCreates } from "./held-creates.ts";
import { createLocalFileAsync } from "./local-files.ts";

/** The bytes of an open file as they are to be published. */
export interface Published {
  ino: number;
  size: number;
  mtime: bigint;
  ctime: bigint;
  path: string;
}

/**
 * How this node's metadata writes reach the store.
 *
 * A sole node (a private Redis no other node shares) is the only reader of its metadata: it writes
 * creates and close-time updates behind its replies, and knows a name missing from a loaded listing
 * is absent.
 *
 * A node of a cluster writes a non-exclusive create behind too, but a file's close (flush, fsync)
 * waits for its create and its new size to be in the store: what another node can see is what was
 * closed (close-to-open). Commands sent in one event-loop turn leave as one pipeline, so writers
 * closing at once share a round trip. Either way a create written behind waits for its file's first
 * publish and goes with it, as one create (held-creates.ts). Should another node have made the same name in between, the
 * later create replaces the earlier file, as if it had been renamed over it. O_EXCL creates and every
 * other namespace change wait for the store before they return.
 */
export interface WritePolicy {
  /** A name missing from a directory listing this node has loaded is surely absent. */
  readonly listingsComplete: boolean;
  /** Make a regular file's record and its local file, open with localFlags. */
  createFile(ctx: VfsContext, c: Caller, parent: number, name: string, mode: number, localFlags: number, exclusive: boolean): Promise<Made>;
  /** Publish new bytes of an open file: a new version, this node as holder. */
  publish(ctx: VfsContext, p: Published): Promise<Inode>;
  /** The store has ino's create (written behind): a close waits for this; rejects when it failed. */
  settled(ino: number): Promise<void>;
  /** ino's create is still on its way to the store (its close must wait, even with nothing written). */
  unsettled(ino: number): boolean;
  /**
   * A file the FUSE shim made and answered the create of: its record, known here and written
   * behind. Never fails for want of the store (the kernel has the file already); its path is
   * undefined when the store was needed to tell it (on a node of a cluster its close then fails).
   */
  adopt?(ctx: VfsContext, c: Caller, parent: number, name: string, m: Adopted): Promise<{ r: Inode; path: string | undefined }>;
}

/** A file made outside JS: its inode and identity, mode and group, times, its local file open as fd, and the create's open flags. */
export interface Adopted {
  ino: number;
  gen: string;
  mode: number;
  gid: number;
  time: bigint;
  fd: number;
  flags: number;
}

const { O_APPEND } = constants;

/**
 * An O_APPEND create on a node of a cluster goes to the store at once rather than at its close: other
 * nodes opening the name to append to it meanwhile (a shared log) find this file, not none.
 */
const sentAtOnce = (flags: number) => (flags & O_APPEND) !== 0;

/** A new file: its record, and its local file open (fd) at path in this node's root. */
export interface Made {
  r: Inode;
  fd: number;
  path: string;
}

/** A new regular file's record: in parent, made by c at time now. */
function newFile(c: Caller, parent: number, name: string, ino: number, gen: string, mode: number, gid: number, now: bigint): Inode {
  return { ino, mode: S_IFREG | (mode & 0o7777), uid: c.uid, gid, rdev: 0, size: 0, nlink: 1, atime: now, mtime: now, ctime: now, version: newVersion(), gen, parent, name };
}

/** The new file r, made in its parent (p: the parent's record, if at hand), known to this node's caches; returns what the store is to be told. */
function taken(ctx: VfsContext, c: Caller, p: Inode | undefined, r: Inode): NewInode {
  ctx.learn(r);
  // The directory's new times are known here too: no round trip queued behind the write. Its name is
  // as old as the record held: a move this disk made since must not be undone in the path cache.
  if (p) ctx.learn({ ...p, mtime: r.mtime, ctime: r.ctime }, false);
  ctx.cache.dirChanged(r.parent, [r.name, r.ino]);
  return { mode: r.mode, uid: r.uid, gid: c.gid, holder: ctx.nodeId, ino: r.ino, version: r.version, gen: r.gen, mtime: r.mtime, atime: r.atime, ctime: r.ctime };
}

/**
 * r's local file, made at the path the namespace has for it. Path and file with no local move of a
 * directory between them (ctx.makingAt): the kernel keeps no create from its directory's rename.
 */
function madeAt(ctx: VfsContext, r: Inode, localFlags: number): Promise<{ path: string; fd: number }> {
  return ctx.makingAt(r.ino, async (path) => ({ path, fd: await createLocalFileAsync(ctx.root, path, localFlags, r) }));
}

/** The new file's record and local file, made here before the store is asked. */
async function makeAhead(ctx: VfsContext, c: Caller, parent: number, name: string, mode: number, localFlags: number): Promise<Made & { init: NewInode }> {
  const p = await ctx.record(parent);
  if (!isDir(p.mode)) throw fsError("ENOTDIR");
  const r = newFile(c, parent, name, await ctx.inos.next(), newGeneration(), mode, p.mode & S_ISGID ? p.gid : c.gid, nowNs());
  ctx.paths.learn(r);
  const { path, fd } = await madeAt(ctx, r, localFlags);
  // The directory's record as held now: another node's change of it may have come while the file was made.
  return { r, fd, path, init: taken(ctx, c, ctx.cache.fresh(parent), r) };
}

/** The create waits for the store; the name is checked there. */
async function createNow(ctx: VfsContext, c: Caller, parent: number, name: string, mode: number, localFlags: number): Promise<Made> {
  const r = ctx.learn(await ctx.cache.changing([parent], () => ctx.store.create(parent, name, { mode: S_IFREG | (mode & 0o7777), uid: c.uid, gid: c.gid, holder: ctx.nodeId, above: ctx.inos.maxSeen })));
  ctx.cache.dirChanged(parent, [name, r.ino]);
  try {
    return { r, ...(await madeAt(ctx, r, localFlags)) };
  } catch (e) {
    await ctx.rollback(parent, name, false);
    throw e;
  }
}

/** The store answered a change with a refusal (a name taken, a directory gone, its disk full): not out of reach, nor a change lost on its way. */
const refusedByStore = (e: unknown) => !(e instanceof OutcomeUnknown) && !(e instanceof StoreUnavailable);

export function createWriteAtClose(held: HeldCreates): WritePolicy {
  /** Creates sent and not yet answered, by inode. */
  const creating = new Map<number, Promise<void>>();

  /** The store refused a create written behind: this node forgets the file it made (its close reports the error). */
  async function undo(ctx: VfsContext, r: Inode, path: string): Promise<void> {
    ctx.cache.dirChanged(r.parent, undefined, r.name);
    ctx.cache.forget(r.ino);
    // The kernel was given the name at the create: it forgets it before the close fails.
    ctx.kernel.unnamed(r.ino, r.parent, r.name);
    await ctx.o.forgetKernelNames?.([[r.parent, r.name]]);
    try {
      ctx.root.unlink(path);
    } catch {
      // Gone already, or renamed locally since: the start-up scan sets such a file aside.
    }
  }

  /**
   * r, made here at path, goes to the store behind the reply; its closes wait for it (settled).
   * path undefined: where its local file is is not known (its directory removed meanwhile); it
   * replaces no file another node made, and a refusal leaves nothing here to remove.
   */
  function sendBehind(ctx: VfsContext, r: Inode, path: string | undefined, init: NewInode, now: boolean): void {
    const where = path ?? `${r.parent}/${r.name}`;
    // The kernel found no such name; one another node made since is replaced (the rule above).
    const answer = held.hold(r.ino, r.parent, r.name, path !== undefined ? { ...init, replace: path } : init);
    if (now) held.send(r.ino);
    const sent = answer.then(
      async (made: Created) => {
        if (made.replaced) await ctx.dropped(made.replaced);
      },
      async (e: unknown) => {
        // Perhaps made after all, or never sent (the store out of reach): not refused. The local
        // file stays (its close publishes it, or the next check of Redis finds it), else a made
        // name would list a file no node holds, or a file being written would be lost.
        if (!refusedByStore(e)) {
          ctx.log.warn({ op: "create", path: where, ino: r.ino, err: (e as Error).message }, "a create written behind may or may not have reached the store; the local file is kept");
          throw e instanceof OutcomeUnknown ? e : new OutcomeUnknown(`${where}: ${(e as Error).message}`);
        }
        ctx.log.warn({ op: "create", path: where, ino: r.ino, err: (e as Error).message }, "the store refused a create written behind; its close fails");
        if (path !== undefined) await undo(ctx, r, path);
        // The file never existed for anyone else: its close fails (not passing for the close of a
        // file unlinked since), and keeps failing (the refusal stays in creating).
        throw new FsError(toErrno(e), `${where}: ${(e as Error).message}`);
      },
    );
    // Kept when refused: every later close of the file must hear it (they are few, and never reused).
    const settle = sent.then(() => {
      if (creating.get(r.ino) === settle) creating.delete(r.ino);
    });
    // Failure is reported by the close that waits for it; nothing else does.
    settle.catch(() => {});
    creating.set(r.ino, settle);
  }

  return {
    listingsComplete: false,
    async createFile(ctx, c, parent, name, mode, localFlags, exclusive) {
      if (exclusive) return createNow(ctx, c, parent, name, mode, localFlags);
      const { r, fd, path, init } = await makeAhead(ctx, c, parent, name, mode, localFlags);
      sendBehind(ctx, r, path, init, sentAtOnce(localFlags));
      return { r, fd, path };
    },
    async adopt(ctx, c, parent, name, m) {
      const r = newFile(c, parent, name, m.ino, m.gen, m.mode, m.gid, m.time);
      ctx.paths.learn(r);
      const init = taken(ctx, c, ctx.cache.fresh(parent), r);
      // Its directory's path unknown here (dropped by a change heard since, the store out of reach):
      // where its local file is, so that a refusal (the directory gone) removes it.
      const path = await ctx.paths.pathOf(r.ino).catch(() => ctx.root.whereIs(m.fd));
      // Sent whatever: only the store's answer tells a directory removed meanwhile (the close fails)
      // from one that is there.
      sendBehind(ctx, r, path, init, sentAtOnce(m.flags));
      return { r, path };
    },
    async publish(ctx, p) {
      const version = newVersion();
      const pending = creating.get(p.ino);
      const made = held.send(p.ino, { size: p.size, mtime: p.mtime, ctime: p.ctime, version, path: p.path });
      if (made && pending) {
        // Its answer is the record; a refusal is the close's error (pending throws it).
        const known = await pending.then(
          () => true,
          (e: unknown) => {
            if (!(e instanceof OutcomeUnknown)) throw e;
            return false;
          },
        );
        if (known) return ctx.learnChange(await made);
      }
      // Sent at once: Redis runs it after the create on the same connection, in the same pipeline.
      const data = ctx.store.setData(p.ino, p.size, p.mtime, p.ctime, ctx.nodeId, p.path, { version });
      if (pending && !made) {
        data.catch(() => {});
        // A create that may or may not have been made: the update's own answer tells (ENOENT: not).
        await pending.catch((e: unknown) => {
          if (!(e instanceof OutcomeUnknown)) throw e;
        });
      }
      return ctx.learnChange(await data);
    },
    settled(ino) {
      held.send(ino);
      return creating.get(ino) ?? Promise.resolve();
    },
    unsettled: (ino) => creating.has(ino),
  };
}

export function createWriteBehind(held: HeldCreates): WritePolicy {
  /** Its own later reads queue behind such a write on the same connection; if it fails, the start-up scan's reconciliation repairs the record from the local file. */
  const behind = (ctx: VfsContext, what: string, ino: number, write: Promise<unknown>) =>
    write.catch((e: unknown) => ctx.log.error({ op: what, ino, err: (e as Error).message }, "deferred metadata write failed; the next start repairs it from the local file"));
  return {
    listingsComplete: true,
    async createFile(ctx, c, parent, name, mode, localFlags) {
      // Only with the directory's whole listing does this node know the name is free.
      if (ctx.cache.listed(parent, name) !== null) return createNow(ctx, c, parent, name, mode, localFlags);
      const { r, fd, path, init } = await makeAhead(ctx, c, parent, name, mode, localFlags);
      void behind(ctx, "create", r.ino, held.hold(r.ino, parent, name, init));
      return { r, fd, path };
    },
    async publish(ctx, p) {
      // The new record is known here already; Redis applies the update in order behind whatever this node sends next.
      const prev = await ctx.record(p.ino);
      // Not its names: those of the record held may be older than a rename or unlink since.
      const r = ctx.learnAhead({ ...prev, size: p.size, mtime: p.mtime, ctime: p.ctime > prev.ctime ? p.ctime : prev.ctime, version: newVersion() });
      // Its create still held: they go as one (the hold's answer is watched by createFile's).
      if (!held.send(p.ino, { size: r.size, mtime: r.mtime, ctime: r.ctime, version: r.version, path: p.path })) {
        void behind(ctx, "setData", p.ino, ctx.store.setData(p.ino, r.size, r.mtime, r.ctime, ctx.nodeId, p.path, { version: r.version }));
      }
      return r;
    },
    settled: () => Promise.resolve(),
    unsettled: () => false,
    async adopt(ctx, c, parent, name, m) {
      const r = newFile(c, parent, name, m.ino, m.gen, m.mode, m.gid, m.time);
      ctx.paths.learn(r);
      // Only what is at hand: the store may be out of reach, and the kernel has the file already.
      void behind(ctx, "create", r.ino, held.hold(r.ino, parent, name, taken(ctx, c, ctx.cache.fresh(parent), r)));
      const path = await ctx.paths.pathOf(r.ino).catch(() => undefined);
      return { r, path };
    },
  };
}
