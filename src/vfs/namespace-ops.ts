import * as fs from "node:fs";
import { RENAME_EXCHANGE, RENAME_NOREPLACE, type Caller, type FileSystem, type SetAttr, type StatFs } from "../fuse/types.ts";
import type { AttrChange, Inode, MetadataStore } from "../meta/store.ts";
import { nowNs } from "../util/time.ts";
import { E, FsError, errnoOf, fsError } from "../util/errno.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import { futimes, holdsBytesOf } from "../local/local-dir.ts";
import { answersFor, isDir, isReg, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG } from "./attr.ts";
import type { VfsContext } from "./context.ts";
import type { Vfs } from "./vfs.ts";
import { applyLocal, clearWay, createLocalFile, exchangeLocal, liveIn, makeLocal, removeDir, withParents } from "./local-files.ts";
import { mayKeepPrivileges, outsideGroup, withoutPrivileges } from "./privileges.ts";

const { O_WRONLY } = fs.constants;
export const NAME_MAX = 255;
const SYMLINK_MAX = 4095;

export function checkName(name: string): void {
  if (Buffer.byteLength(name) > NAME_MAX) throw fsError("ENAMETOOLONG");
}

export function checkReserved(parent: number, name: string): void {
  if (parent === 1 && name === RESERVED_NAME) throw new FsError(E.EPERM, `${RESERVED_NAME} is reserved at the top of the filesystem`);
}

/**
 * A change the store must keep (a name, attributes) takes room in it: refused while what is left of
 * the disk is kept for removals (the way to make room).
 */
export function checkRoom(ctx: VfsContext): void {
  if (ctx.o.roomFor?.(0) === false) throw new FsError(E.ENOSPC, "the disk's last room is kept for removals");
}

type NamespaceOps = Pick<FileSystem, "lookup" | "getattr" | "setattr" | "readlink" | "mknod" | "mkdir" | "unlink" | "rmdir" | "symlink" | "rename" | "link" | "access" | "statfs"> & Pick<Vfs, "unlinkLost">;

/** Names and attributes: each change goes to the store first, then to this node's disk and caches. */
export function createNamespaceOps(ctx: VfsContext): NamespaceOps {
  const { store, root, nodeId, paths, cache, kernel, o } = ctx;
  const { changing, dirChanged, dropListing, forget } = cache;
  const above = () => ctx.inos.maxSeen;

  /** A directory removed while open here has no record in the store, nor a local directory: what is set through its fd stays with the handles. */
  function removedDirChanged(r: Inode, set: SetAttr): Inode {
    if (set.size !== undefined) throw fsError("EISDIR");
    const now = nowNs();
    const time = (t: bigint | "now" | undefined, was: bigint) => (t === undefined ? was : t === "now" ? now : t);
    const changed: Inode = { ...r, mode: set.mode === undefined ? r.mode : S_IFDIR | (set.mode & 0o7777), uid: set.uid ?? r.uid, gid: set.gid ?? r.gid, atime: time(set.atime, r.atime), mtime: time(set.mtime, r.mtime), ctime: set.ctime ?? now };
    ctx.open.setDirRecord(changed);
    return changed;
  }

  /** The store's record of r changed; one the store has no more (removed on another node) changes only for its handles here. */
  async function attrsChanged(r: Inode, change: AttrChange): Promise<Inode> {
    try {
      return ctx.learnChange(await store.setAttrs(r.ino, change));
    } catch (e) {
      const entry = errnoOf(e) === E.ENOENT ? ctx.open.inode(r.ino) : undefined;
      if (!entry) throw e;
      entry.rec = { ...entry.rec, ...change, ctime: nowNs() };
      return entry.rec;
    }
  }

  /**
   * The store's rename, and this node's caches after it. Its disk follows from its todo list
   * (r.queued: catchUp), in the order of the changes queued for it: a move made here at once could
   * come before a move another node queued for it earlier, and meet that one's paths.
   */
  async function renamed(c: Caller, parent: number, name: string, newParent: number, newName: string, flags: number) {
    const r = await changing([parent, newParent], () => store.rename(parent, name, newParent, newName, flags, c.uid));
    kernel.moved(r.ino, { parent, name }, newParent, newName);
    if (r.exchanged) {
      kernel.moved(r.exchanged, { parent: newParent, name: newName }, parent, name);
      dirChanged(parent, [name, r.exchanged]);
      dirChanged(newParent, [newName, r.ino]);
    } else {
      dirChanged(parent, undefined, name);
      dirChanged(newParent, [newName, r.ino]);
    }
    if (r.replaced) kernel.unnamed(r.replaced.ino, newParent, newName);
    if (r.replaced?.dir) dropListing(r.replaced.ino);
    // Not queued: no bytes of this node's are named (a symlink made here may be).
    if (!r.queued && r.from !== undefined && r.to !== undefined && r.from !== r.to) {
      if (r.exchanged) exchangeLocal(root, r.from, r.to);
      else if (root.typeOf(r.from) !== undefined) makeLocal(root, r.to, () => root.rename(r.from!, r.to!));
      else if (r.replaced && !r.replaced.dir) clearWay(root, r.to);
    }
    if (r.exchanged) forget(r.exchanged);
    forget(r.ino);
    // Begun before the caches' new paths are read by anything made here (VfsContext.makingAt); the
    // move itself waits for the local directories' lock, which a rename of directories holds.
    const applied = r.queued ? o.catchUp?.() : undefined;
    return { r, applied };
  }

  const { onInode } = ctx;

  return {
    async lookup(_c, parent, name) {
      checkName(name);
      const ino = cache.listed(parent, name);
      // Another node's new name reaches this listing a moment after its create returns, unless this
      // node watches the directory: then it returns only once this node heard of it.
      if (ino === null && (ctx.policy.listingsComplete || cache.surelyAbsent(parent))) throw fsError("ENOENT");
      // A file of one name whose record names it otherwise: the listing is behind a change read since
      // (a rename whose message is on its way), and the store tells.
      const known = ino ? cache.fresh(ino) : undefined;
      if (known && answersFor(known, parent, name)) return kernel.answering(parent, name, known);
      if (ino !== null && ino !== undefined) cache.missed(parent, ino);
      return kernel.answering(parent, name, ctx.learn(await store.lookup(parent, name)));
    },

    getattr: (_c, ino) => onInode(ino, async () => kernel.attr(kernel.sameFile(await ctx.record(ino)))),

    setattr: (c, ino, set: SetAttr, fh) => onInode(ino, async () => {
      const h = fh !== undefined ? ctx.open.find(fh) : undefined;
      // A size cut through this node's own writable handle (ftruncate, O_TRUNC): its record is the
      // open file's, published at close; nothing to ask the store.
      const sizeOnly = Object.keys(set).every((k) => k === "size" || k === "killPrivileges");
      // A truncate may be what makes room.
      if (!sizeOnly) checkRoom(ctx);
      let r = kernel.sameFile(h?.writable && sizeOnly ? await ctx.record(ino) : await ctx.current(ino));
      if (isDir(r.mode) && r.nlink === 0) return kernel.attr(removedDirChanged(r, set));
      const held = ctx.open.localFd(ino);
      // Open here, a file may have no path left (unlinked, its directory gone): its fd still reaches it.
      const p = await paths.pathOf(ino).catch((e: unknown) => {
        if (held === undefined || errnoOf(e) !== E.ENOENT) throw e;
        return undefined;
      });
      if (set.size !== undefined) {
        if (isDir(r.mode)) throw fsError("EISDIR");
        if (!isReg(r.mode)) throw fsError("EINVAL");
        // Past 2^53 a size is no longer exact here (and past any file a disk here can hold).
        if (!Number.isSafeInteger(set.size)) throw fsError("EFBIG");
        if (h?.writable) {
          // Through an open handle: published with the rest of the writes at flush (close-to-open),
          // which must come here even if the shim served no write through the handle.
          fs.ftruncateSync(h.fd, set.size);
          h.dirty = true;
          h.closed = false;
          o.dirtyHandle?.(fh!);
        } else {
          if (p === undefined) throw new FsError(E.ENOENT, `inode ${ino} has no path left to truncate it by`);
          const size = set.size;
          // One at a time with this file's commits (a close's publish, maybe still on its way here): each
          // then takes the size the other left, on the disk and in the store alike.
          await ctx.resizing(ino, async () => {
            // Its version as it is now, after what went before in the queue (which holders have it).
            if (o.remote) r = kernel.sameFile(await ctx.current(ino));
            // A queued drop of an older version must not take the file this cut makes (and then publishes) meanwhile.
            const done = ctx.open.writeOutside(ino);
            try {
              if (o.remote && (await store.locations(ino)).get(nodeId) !== r.version) {
                // Another node holds the bytes: take them first (all but nothing is kept when cutting to 0).
                await ctx.takeHere(r, p, size === 0);
                if (r.nlink > 1) await ctx.linkAllNames(ino, p);
              }
              const fd = root.openFile(p, O_WRONLY);
              try {
                // Another file at the path (a rename here moved it onto the name since its path was read): not this one's to cut.
                if (!holdsBytesOf(root, fd, ino)) throw new FsError(E.ESTALE, `${p} holds another file than inode ${ino} now`);
                const st = fs.fstatSync(fd, { bigint: true });
                // The store first: a cut it refuses leaves every byte on the disk. The disk then gets
                // the record's mtime, as a start takes a file whose mtime differs for a change the store missed.
                const now = nowNs();
                r = ctx.learnChange(await store.setData(ino, size, now, now, nodeId, p, { acked: true }));
                fs.ftruncateSync(fd, size);
                futimes(fd, st.atimeNs, now);
                ctx.changedInPlace(fd, r, "cut");
              } finally {
                fs.closeSync(fd);
              }
            } finally {
              done();
            }
          });
        }
      }
      const change: AttrChange = {};
      const link = (r.mode & S_IFMT) === S_IFLNK;
      if (set.mode !== undefined) change.mode = (r.mode & S_IFMT) | (set.mode & 0o7777);
      // Privileges go with a chown, whoever asks (Linux since 2.2.13), with a truncate by a caller
      // without CAP_FSETID, and where the kernel asks with nothing to change (its own taking of them
      // before a write or fallocate, stripped of the mode): it sends none of these as a mode when it
      // leaves that to mcfs (native/killpriv.c).
      else if (set.killPrivileges || set.uid !== undefined || set.gid !== undefined || Object.keys(set).length === 0) {
        const kept = withoutPrivileges(r.mode, () => outsideGroup(c, r.gid) && !mayKeepPrivileges(c));
        if (kept !== undefined) change.mode = kept;
      }
      if (set.uid !== undefined) change.uid = set.uid;
      if (set.gid !== undefined) change.gid = set.gid;
      if (set.atime !== undefined || set.mtime !== undefined) {
        const now = nowNs();
        change.atime = set.atime === undefined ? r.atime : set.atime === "now" ? now : set.atime;
        change.mtime = set.mtime === undefined ? r.mtime : set.mtime === "now" ? now : set.mtime;
      }
      // The store first: a change it refuses leaves the disk as it was, or the next start would publish it from there.
      if (Object.keys(change).length || set.ctime !== undefined) r = await attrsChanged(r, change);
      const mode = change.mode;
      if (mode !== undefined && !link) applyLocal(() => (p === undefined ? fs.fchmodSync(held!, mode & 0o7777) : root.chmod(p, mode & 0o7777)));
      if (set.uid !== undefined || set.gid !== undefined) applyLocal(() => (p === undefined ? fs.fchownSync(held!, r.uid, r.gid) : root.chown(p, r.uid, r.gid)));
      if (change.atime !== undefined && change.mtime !== undefined) {
        const [at, mt] = [change.atime, change.mtime];
        if (p !== undefined) applyLocal(() => root.utimes(p, at, mt));
        // Open for writing here: a stat shows that file's times, and it may have no name left (unlinked).
        const through = ctx.open.writerFd(ino) ?? (p === undefined ? held : undefined);
        if (through !== undefined) futimes(through, at, mt);
      }
      return kernel.attr(r);
    }),

    readlink: (_c, ino) => onInode(ino, async () => {
      const r = await ctx.record(ino);
      if (r.target === undefined) throw fsError("EINVAL");
      return r.target;
    }),

    async mknod(c, parent, name, mode, rdev) {
      checkName(name);
      checkReserved(parent, name);
      checkRoom(ctx);
      const reg = (mode & S_IFMT) === S_IFREG || (mode & S_IFMT) === 0;
      const m = reg ? S_IFREG | (mode & 0o7777) : mode;
      const r = ctx.learn(await changing([parent], () => store.create(parent, name, { mode: m, uid: c.uid, gid: c.gid, rdev, holder: reg ? nodeId : "", above: above() })));
      dirChanged(parent, [name, r.ino]);
      if (reg) {
        try {
          await ctx.makingAt(r.ino, async (p) => fs.closeSync(createLocalFile(root, p, O_WRONLY, r)));
        } catch (e) {
          await ctx.rollback(parent, name, false);
          throw e;
        }
      }
      return kernel.answering(parent, name, r);
    },

    async mkdir(c, parent, name, mode) {
      checkName(name);
      checkReserved(parent, name);
      checkRoom(ctx);
      const r = ctx.learn(await changing([parent], () => store.create(parent, name, { mode: S_IFDIR | (mode & 0o7777), uid: c.uid, gid: c.gid, above: above() })));
      dirChanged(parent, [name, r.ino]);
      try {
        await ctx.makingAt(r.ino, async (p) => {
          withParents(root, p, () => {
            try {
              root.mkdir(p, r.mode & 0o7777);
            } catch (e) {
              if (errnoOf(e) !== E.EEXIST) throw e;
              if (root.typeOf(p) !== "dir") {
                root.remove(p);
                root.mkdir(p, r.mode & 0o7777);
              }
            }
          });
          root.chown(p, r.uid, r.gid);
          root.chmod(p, r.mode & 0o7777);
          ctx.dirMarks.mark(p, r.ino);
        });
      } catch (e) {
        await ctx.rollback(parent, name, true);
        throw e;
      }
      return kernel.answering(parent, name, r);
    },

    async unlink(c, parent, name) {
      const r = await changing([parent], () => store.remove(parent, name, false, c.uid));
      kernel.unnamed(r.ino, parent, name);
      dirChanged(parent, undefined, name);
      // The disk first follows the changes queued for this node before: until then another file may be at path.
      if (r.behind || o.applying?.()) await o.catchUp?.();
      if (r.nlink === 0 && r.held !== undefined) o.deleting?.(r.ino, r.held);
      if (!(r.nlink === 0 && r.held !== undefined && o.retire?.(r.path, r.ino, r.held))) await root.removeAsync(r.path);
      await ctx.dropped(r);
    },

    async unlinkLost(parent, name, only) {
      const r = await changing([parent], () => store.remove(parent, name, false, undefined, only));
      kernel.unnamed(r.ino, parent, name);
      dirChanged(parent, undefined, name);
      // Its bytes are gone from this disk already: what is at its path is another file's, and stays.
      await ctx.dropped(r);
    },

    async rmdir(c, parent, name) {
      const r = await changing([parent], () => store.remove(parent, name, true, c.uid));
      dirChanged(parent, undefined, name);
      dropListing(r.ino);
      forget(r.ino);
      // After the removals of files in it that other nodes queued for this one before (a sole node: at once).
      if (r.queued) await o.catchUp?.();
      else await removeDir(root, r.path, liveIn(store), ctx.log);
    },

    async symlink(c, parent, name, target) {
      checkName(name);
      checkReserved(parent, name);
      checkRoom(ctx);
      if (Buffer.byteLength(target) > SYMLINK_MAX) throw fsError("ENAMETOOLONG");
      const r = ctx.learn(await changing([parent], () => store.create(parent, name, { mode: S_IFLNK | 0o777, uid: c.uid, gid: c.gid, size: Buffer.byteLength(target), target, above: above() })));
      dirChanged(parent, [name, r.ino]);
      try {
        await ctx.makingAt(r.ino, async (p) => {
          makeLocal(root, p, () => root.symlink(target, p));
          root.chown(p, r.uid, r.gid);
        });
      } catch (e) {
        await ctx.rollback(parent, name, false);
        throw e;
      }
      return kernel.answering(parent, name, r);
    },

    async rename(c, parent, name, newParent, newName, flags) {
      checkName(newName);
      checkReserved(newParent, newName);
      checkRoom(ctx);
      const known = RENAME_NOREPLACE | RENAME_EXCHANGE;
      if (flags & ~known || flags === known) throw fsError("EINVAL");
      // A directory's local move waits for creates made by path under it, and they for it: the kernel
      // keeps no create inside a directory from its rename. A known file's rename moves no one's path.
      const from = cache.listed(parent, name);
      const rec = from ? cache.fresh(from) : undefined;
      const movesDirs = !!(flags & RENAME_EXCHANGE) || !rec || isDir(rec.mode);
      const { r, applied } = await (movesDirs ? ctx.localDirs.exclusive(() => renamed(c, parent, name, newParent, newName, flags)) : renamed(c, parent, name, newParent, newName, flags));
      // This node's disk follows before the rename returns: later, the move would meet what the
      // caller made at its old path since.
      await applied;
      await ctx.dropped(r.replaced);
    },

    link: (_c, ino, newParent, newName) => onInode(ino, async () => {
      checkName(newName);
      checkReserved(newParent, newName);
      checkRoom(ctx);
      // Its other names' attributes (nlink, ctime) change too.
      const { record, from: src, to: dst } = await changing([newParent], () => store.link(ino, newParent, newName));
      const r = ctx.learn(record);
      dirChanged(newParent, [newName, ino]);
      // The nodes holding the bytes link them under the new name (told through their todo lists);
      // this one too if it is one of them, or has the symlink. Any node can make the link.
      const mine = isReg(r.mode) ? (await store.locations(ino)).get(nodeId) === r.version : root.typeOf(src) === "link";
      if (mine) ctx.linkLocal(src, dst);
      return kernel.answering(newParent, newName, r);
    }),

    access: (c, ino, mask) => onInode(ino, async () => {
      const r = await ctx.record(ino);
      if (mask === 0 || c.uid === 0) {
        if (c.uid === 0 && mask & 1 && !isDir(r.mode) && !(r.mode & 0o111)) throw fsError("EACCES");
        return;
      }
      const bits = c.uid === r.uid ? (r.mode >> 6) & 7 : c.gid === r.gid ? (r.mode >> 3) & 7 : r.mode & 7;
      if ((bits & mask) !== mask) throw fsError("EACCES");
    }),

    async statfs(): Promise<StatFs> {
      const s = fs.statfsSync(root.path);
      return { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, namemax: NAME_MAX };
    },
  };
}
