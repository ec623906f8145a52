import * as fs from "node:fs";
import { dirname } from "node:path";
import { RENAME_EXCHANGE, RENAME_NOREPLACE, type Attr, type Caller, type DirEntry, type FileSystem, type OpenReply, type SetAttr, type StatFs } from "../fuse/types.ts";
import { newGeneration, newVersion, type Holders, type Inode, type Invalidation, type MetadataStore, type Removed } from "../meta/store.ts";
import { nowNs } from "../util/time.ts";
import { E, FsError, errnoOf, fsError } from "../util/errno.ts";
import type { Logger } from "../util/log.ts";
import { attrOf, isDir, isReg, S_IFDIR, S_IFLNK, S_IFMT, S_IFREG, S_ISGID } from "./attr.ts";
import { createPathCache } from "./paths.ts";
import { createMetaCache } from "./meta-cache.ts";
import { applyLocal, createLocalFile, exchangeLocal, makeLocal, withParents } from "./local-files.ts";
import type { LocalDir } from "../local/local-dir.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import { ChangingCopy, type RangeReader, type RemoteData, type Sibling } from "./remote-data.ts";

const O_ACCMODE = 3;
const { O_APPEND, O_SYNC, O_DSYNC, O_RDWR, O_WRONLY, O_RDONLY, O_TRUNC } = fs.constants;
const KEEP_OPEN_FLAGS = O_ACCMODE | O_APPEND | O_SYNC | O_DSYNC;
const NAME_MAX = 255;
const XATTR_SIZE_MAX = 65536;
const OPENED_MAX = 200_000;
const INO_BLOCK = 1024;
/** Longest an open waits for another node's write to publish the bytes it is changing. */
const CHANGING_WAIT_MS = 10_000;
/** Longest pause between its tries meanwhile (they start at 10 ms and double). */
const CHANGING_POLL_MS = 200;
/** A node's turn to write a file lasts this long unless renewed (a crashed writer's turn runs out). */
const WRITE_LEASE_MS = 60_000;
/** Longest an open for writing waits for another node's writer to close. */
const WRITE_WAIT_MS = 10_000;
/** The turn comes back just after the change notice of the writer's close: look again this often. */
const LEASE_POLL_MS = 50;
/** How far past the highest number seen the inode counter is raised after Redis lost writes. */
const INO_MARGIN = 1_000_000;


export interface VfsOptions {
  /** This node's root path, every local operation confined to it. */
  root: LocalDir;
  nodeId: string;
  store: MetadataStore;
  log: Logger;
  /** How long a fetched record may answer getattr again (the kernel's attribute timeout). */
  attrCacheMs: number;
  /** No other node shares the store (private Redis): cached records may answer open() too. */
  soleNode: boolean;
  /** Fetches other nodes' bytes; absent on a sole node. */
  remote?: RemoteData;
  /** Apply other nodes' pending renames and deletes to the local disk (when a held file is missing). */
  catchUp?: () => Promise<void>;
  /** Make the kernel forget the attributes it cached for ino; resolves once it has. */
  refreshKernelAttrs?: (ino: number) => Promise<void>;
  /** Make the kernel forget a name it cached (it now leads to another file). */
  dropKernelEntry?: (parent: number, name: string) => void;
  /** The last name of a file held here goes: true when its bytes were kept for readers elsewhere. */
  retire?: (path: string, ino: number, version: number) => boolean;
  /** Bytes read or written in JS (the shim counts what it serves itself). */
  onIo?: (kind: "read" | "write", bytes: number) => void;
}

interface Handle {
  ino: number;
  /** The local copy, or -1 while ranges of a big remote file are read from its holder. */
  fd: number;
  ranges?: RangeReader;
  writable: boolean;
  /** Written through JS (the shim reports its own writes at flush). */
  dirty: boolean;
  /** Read-only: the version whose bytes it reads, and that version's size. */
  reads?: { version: number; size: number };
}

interface DirHandle {
  entries: { name: string; ino: number; type: number }[];
}

export interface Vfs extends FileSystem {
  /** Another node changed these: drop what this node cached of them. */
  invalidate(inv: Invalidation): void;
  /** Changes may have been missed: drop every cache. */
  resync(): void;
  /** Whether ino is open for writing on this node. */
  writing(ino: number): boolean;
  /**
   * For a read of ino's root file that must not see a write: a check, true while no write of the
   * file has begun here since this call (false from the start if one is under way).
   */
  steady(ino: number): () => boolean;
  /** Close every open backing file (at shutdown). */
  closeAll(): Promise<void>;
  readonly openFiles: number;
}

function checkName(name: string): void {
  if (Buffer.byteLength(name) > NAME_MAX) throw fsError("ENAMETOOLONG");
}

export function createVfs(o: VfsOptions): Vfs {
  const { store, root, nodeId, log } = o;
  const paths = createPathCache(store);
  const handles = new Map<number, Handle>();
  /** Inodes open on this node: their handles, and their record (this node is where they change). */
  const byIno = new Map<number, { handles: Set<Handle>; rec: Inode }>();
  const dirs = new Map<number, DirHandle>();
  const purgeOnClose = new Set<number>();
  /** Data version of each inode when this node last opened it (for the kernel's page cache). */
  const openedVersion = new Map<number, number>();
  /**
   * Identity of the file the kernel was told each inode number is. Another identity under the same
   * number (handed out again after Redis lost writes) means the kernel's inode is stale: ESTALE makes
   * it look the name up again instead of reading another file's bytes under it.
   */
  const kernelGen = new Map<number, string>();
  /** The name the kernel last got each inode under (a lookup, a create, readdirplus). */
  const kernelName = new Map<number, { parent: number; name: string }>();
  /** Attributes for a name's reply: the kernel will know r.ino under it. */
  function told(parent: number, name: string, r: Inode): Attr {
    const gen = kernelGen.get(r.ino);
    if (gen !== undefined && gen !== r.gen) {
      // The number is another file's now: the name the kernel knew the old one by must lead nowhere stale.
      const old = kernelName.get(r.ino);
      if (old && (old.parent !== parent || old.name !== name)) o.dropKernelEntry?.(old.parent, old.name);
    }
    if (kernelName.size >= OPENED_MAX) kernelName.clear();
    kernelName.set(r.ino, { parent, name });
    return liveAttr(r);
  }
  function sameFile(r: Inode): Inode {
    const gen = kernelGen.get(r.ino);
    if (gen === undefined || gen === r.gen) return r;
    kernelGen.delete(r.ino);
    throw new FsError(E.ESTALE, `inode ${r.ino} is another file now`);
  }
  /** Data version of the attributes last given to the kernel, per inode (it caches them). */
  const kernelVersion = new Map<number, number>();
  let nextFh = 1;
  const freeFh: number[] = [];

  const allocFh = () => freeFh.pop() ?? nextFh++;

  const cache = createMetaCache({ store, paths, attrCacheMs: o.attrCacheMs, skipPrefetch: (ino) => byIno.has(ino) });
  const { changing, dirChanged, dropListing, forget } = cache;

  /** Opens waiting for another node to publish new bytes of an inode (its write's close). */
  const dataWaiters = new Map<number, Set<() => void>>();
  /** Registered before trying, so a change that comes while the try runs is not missed. */
  function nextDataChange(ino: number): { wait(ms: number): Promise<void>; cancel(): void } {
    let fire!: () => void;
    const changed = new Promise<void>((res) => (fire = res));
    let set = dataWaiters.get(ino);
    if (!set) dataWaiters.set(ino, (set = new Set()));
    set.add(fire);
    let timer: ReturnType<typeof setTimeout> | undefined;
    const cancel = () => {
      clearTimeout(timer);
      set.delete(fire);
      if (!set.size && dataWaiters.get(ino) === set) dataWaiters.delete(ino);
      fire();
    };
    return {
      wait: (ms) => Promise.race([changed, new Promise<void>((res) => (timer = setTimeout(res, Math.max(0, ms))))]),
      cancel,
    };
  }

  /** One more local name for the bytes at from; the namespace has the name already, so a failure is only logged. */
  function linkLocal(from: string, to: string): void {
    try {
      makeLocal(root, to, () => root.link(from, to));
    } catch (e) {
      log.warn({ from, to, err: (e as Error).message }, "could not link a local copy under a new name");
    }
  }

  /** After this node took an inode's bytes: they go under every name it has (hard links), not only the first. */
  async function linkAllNames(ino: number, primary: string): Promise<void> {
    for (const { parent, name } of await store.extraNames(ino)) {
      const p = await paths.childPath(parent, name).catch(() => undefined);
      if (p && p !== primary) linkLocal(primary, p);
    }
  }

  /** Whether a handle open here (other than except) writes ino. */
  function hasWriter(ino: number, except?: Handle): boolean {
    for (const h of byIno.get(ino)?.handles ?? []) if (h !== except && h.writable) return true;
    return false;
  }

  /**
   * When writes of root files began here (a stamp per inode; older ones forgotten into floor): the
   * bytes of a published version change in place under a writer, and a peer reading them must know.
   */
  const writeBegun = new Map<number, number>();
  let writeStamp = 0;
  let writeFloor = 0;
  function beginWrite(ino: number): void {
    if (writeBegun.size >= OPENED_MAX) {
      writeBegun.clear();
      writeFloor = writeStamp;
    }
    writeBegun.set(ino, ++writeStamp);
  }

  function steady(ino: number): () => boolean {
    const at = writeStamp;
    if (hasWriter(ino)) return () => false;
    return () => (writeBegun.get(ino) ?? writeFloor) <= at && !hasWriter(ino);
  }

  /** Inodes this node has the write turn of. */
  const leases = new Set<number>();
  /**
   * Writers on different nodes take turns (a lease in the store): an open for writing waits for
   * another node's writer to close, then reads what it wrote — so appends from several nodes all land.
   * A node that keeps a file open for writing past WRITE_WAIT_MS is not waited for longer: then the
   * last close wins, as before. Every writer on this node shares the node's turn.
   */
  async function takeWriteLease(ino: number): Promise<boolean> {
    if (leases.has(ino)) return true;
    const deadline = Date.now() + WRITE_WAIT_MS;
    for (;;) {
      const change = nextDataChange(ino);
      try {
        if (await store.takeWriteLease(ino, nodeId, WRITE_LEASE_MS)) {
          leases.add(ino);
          return true;
        }
        if (Date.now() >= deadline) {
          log.warn({ ino }, "another node has been writing this file for long: writing at the same time (the last close wins)");
          return false;
        }
        // Its close publishes new bytes (a change notice), and gives the turn back just after.
        await change.wait(Math.min(LEASE_POLL_MS, deadline - Date.now()));
      } finally {
        change.cancel();
      }
    }
  }

  function releaseWriteLease(ino: number): void {
    leases.delete(ino);
    store.releaseWriteLease(ino, nodeId).catch((e: unknown) => log.warn({ ino, err: (e as Error).message }, "could not give back the write turn; it expires by itself"));
  }

  /** Remember a fresh record (also as the open-file state when the inode is open here). */
  function learn(r: Inode): Inode {
    if (r.ino > maxSeen) maxSeen = r.ino;
    const open = byIno.get(r.ino);
    if (open) open.rec = r;
    return cache.learn(r);
  }

  /** The record of an inode: from the open-file state when open here, a recent fetch, else the store. */
  async function record(ino: number): Promise<Inode> {
    return byIno.get(ino)?.rec ?? cache.fresh(ino) ?? learn(await store.get(ino));
  }

  /** Attributes, with size and mtime from the local file while this node has it open for writing. */
  function liveAttr(r: Inode): Attr {
    if (kernelVersion.size >= OPENED_MAX) kernelVersion.clear();
    kernelVersion.set(r.ino, r.version);
    if (kernelGen.size >= OPENED_MAX) kernelGen.clear();
    kernelGen.set(r.ino, r.gen);
    const a = attrOf(r);
    const o = byIno.get(r.ino);
    if (o) {
      for (const h of o.handles) {
        if (!h.writable) continue;
        const st = fs.fstatSync(h.fd, { bigint: true });
        a.size = Number(st.size);
        if (st.mtimeNs > a.mtime + 1_000_000n) a.mtime = st.mtimeNs;
        // An ftruncate or write through the handle changed the file after the record was written.
        if (st.ctimeNs > a.ctime + 1_000_000n) a.ctime = st.ctimeNs;
        return a;
      }
      // Read here at an older version while a newer one was published: the kernel's size stays that
      // of the bytes the last open reads, or a read under way would end at the new size, cut short.
      let last: Handle["reads"];
      for (const h of o.handles) last = h.reads ?? last;
      if (last && last.version !== r.version) {
        a.size = last.size;
        kernelVersion.set(r.ino, last.version);
      }
    }
    return a;
  }

  /** The other files of dir, as far as its listing is loaded (none otherwise: no Redis call for this). */
  async function siblingsOf(ino: number, dir: number): Promise<Iterable<Sibling>> {
    const l = cache.entries(dir);
    if (!l) return [];
    const base = await paths.pathOf(dir);
    const prefix = base === "/" ? "/" : `${base}/`;
    return (function* () {
      for (const [name, i] of l) if (i > 0 && i !== ino) yield { ino: i, path: prefix + name };
    })();
  }

  function addHandle(h: Handle, rec: Inode): number {
    const fh = allocFh();
    if (h.writable) beginWrite(h.ino);
    handles.set(fh, h);
    let o = byIno.get(h.ino);
    if (!o) byIno.set(h.ino, (o = { handles: new Set(), rec }));
    o.handles.add(h);
    return fh;
  }

  function handleOf(fh: number): Handle {
    const h = handles.get(fh);
    if (!h) throw fsError("EBADF");
    return h;
  }

  /** Publish the bytes of an open file: size, mtime, new version, this node as holder. */
  async function commit(h: Handle): Promise<Inode> {
    const st = fs.fstatSync(h.fd, { bigint: true });
    h.dirty = false;
    const path = await paths.pathOf(h.ino);
    // The change happened when the file last changed (an ftruncate, a write), not when it is published.
    const known = byIno.get(h.ino)?.rec.ctime ?? 0n;
    const ctime = st.ctimeNs > known ? st.ctimeNs : known;
    if (!o.soleNode) return learn(await store.setData(h.ino, Number(st.size), st.mtimeNs, ctime, nodeId, path));
    // A sole node is the only reader of its metadata: it knows the new record already, and Redis
    // applies the update in order behind whatever this node sends next (see deferred()).
    const prev = await record(h.ino);
    const r = learn({ ...prev, size: Number(st.size), mtime: st.mtimeNs, ctime: ctime > prev.ctime ? ctime : prev.ctime, version: newVersion() });
    deferred("setData", h.ino, store.setData(h.ino, r.size, r.mtime, r.ctime, nodeId, path, r.version));
    return r;
  }

  /**
   * A metadata write a sole node does not wait for. Its own later reads queue behind it on the same
   * connection; if it fails, the start-up scan's reconciliation repairs the record from the local file.
   */
  function deferred(what: string, ino: number, write: Promise<unknown>): void {
    write.catch((e: unknown) => log.error({ op: what, ino, err: (e as Error).message }, "deferred metadata write failed; the next start repairs it from the local file"));
  }

  /** Highest inode number this node has seen (its kernel may know every one up to it). */
  let maxSeen = 0;
  /** Inode numbers handed out by this node without a round trip, a block at a time. */
  let inoNext = 0, inoEnd = 0;
  async function nextIno(): Promise<number> {
    if (inoNext >= inoEnd) {
      inoNext = await store.reserveInodes(INO_BLOCK);
      if (inoNext <= maxSeen) {
        // The counter went back (Redis lost writes): never hand out a number the kernel may know.
        await store.raiseInodeCounter(maxSeen + INO_MARGIN);
        inoNext = await store.reserveInodes(INO_BLOCK);
      }
      inoEnd = inoNext + INO_BLOCK;
    }
    return inoNext++;
  }

  async function dropped(r: Removed | undefined): Promise<void> {
    if (!r) return;
    forget(r.ino);
    // Still open here: fstat on a descriptor must see the name count the store now has.
    const open = byIno.get(r.ino);
    if (open && !r.dir) open.rec = { ...open.rec, nlink: r.nlink, ctime: nowNs() };
    if (r.dir || r.nlink > 0) return;
    if (byIno.has(r.ino)) purgeOnClose.add(r.ino);
    else await store.purge(r.ino);
  }

  async function rollback(parent: number, name: string, dir: boolean) {
    const path = await paths.childPath(parent, name).catch(() => "");
    await store.remove(parent, name, dir, path).catch((e: unknown) => log.error({ err: e, parent, name }, "rollback of a failed create left an entry"));
  }

  function checkReserved(parent: number, name: string) {
    if (parent === 1 && name === RESERVED_NAME) throw new FsError(E.EPERM, `${RESERVED_NAME} is reserved at the top of the filesystem`);
  }

  const vfs: Vfs = {
    get openFiles() {
      return handles.size;
    },

    async lookup(_c, parent, name) {
      checkName(name);
      const ino = cache.listed(parent, name);
      // Another node's new name reaches this listing a moment after its create returns, so only a
      // sole node answers "no such name" from memory.
      if (ino === null && o.soleNode) throw fsError("ENOENT");
      const known = ino ? cache.fresh(ino) : undefined;
      if (known) return told(parent, name, known);
      return told(parent, name, learn(await store.lookup(parent, name)));
    },

    async getattr(_c, ino) {
      return liveAttr(sameFile(await record(ino)));
    },

    async setattr(_c, ino, set: SetAttr, fh) {
      let r = sameFile(learn(await store.get(ino)));
      const p = await paths.pathOf(ino);
      if (set.size !== undefined) {
        if (isDir(r.mode)) throw fsError("EISDIR");
        if (!isReg(r.mode)) throw fsError("EINVAL");
        const h = fh !== undefined ? handles.get(fh) : undefined;
        if (h?.writable) {
          // Through an open handle: published with the rest of the writes at flush (close-to-open).
          fs.ftruncateSync(h.fd, set.size);
          h.dirty = true;
        } else {
          if (o.remote && !o.soleNode && (await store.locations(ino)).get(nodeId) !== r.version) {
            // Another node holds the bytes: take them first (all but nothing is kept when cutting to 0).
            if (set.size === 0) fs.closeSync(createLocalFile(root, p, O_WRONLY, r));
            else {
              root.ensureDir(dirname(p));
              await o.remote.fetchTo(ino, r.version, p, r.size, r);
            }
            if (r.nlink > 1) await linkAllNames(ino, p);
          }
          beginWrite(ino);
          const fd = root.openFile(p, O_WRONLY);
          let mtime: bigint;
          try {
            fs.ftruncateSync(fd, set.size);
            mtime = fs.fstatSync(fd, { bigint: true }).mtimeNs;
          } finally {
            fs.closeSync(fd);
          }
          r = learn(await store.setData(ino, set.size, mtime, nowNs(), nodeId, p));
        }
      }
      const change: Parameters<MetadataStore["setAttrs"]>[1] = {};
      const link = (r.mode & S_IFMT) === S_IFLNK;
      if (set.mode !== undefined) {
        change.mode = (r.mode & S_IFMT) | (set.mode & 0o7777);
        if (!link) applyLocal(() => root.chmod(p, set.mode! & 0o7777));
      }
      if (set.uid !== undefined || set.gid !== undefined) {
        if (set.uid !== undefined) change.uid = set.uid;
        if (set.gid !== undefined) change.gid = set.gid;
        applyLocal(() => root.chown(p, set.uid ?? r.uid, set.gid ?? r.gid));
      }
      if (set.atime !== undefined || set.mtime !== undefined) {
        const now = nowNs();
        const at = set.atime === undefined ? r.atime : set.atime === "now" ? now : set.atime;
        const mt = set.mtime === undefined ? r.mtime : set.mtime === "now" ? now : set.mtime;
        change.atime = at;
        change.mtime = mt;
        applyLocal(() => root.utimes(p, at, mt));
      }
      if (Object.keys(change).length || set.ctime !== undefined) r = learn(await store.setAttrs(ino, change));
      return liveAttr(r);
    },

    async readlink(_c, ino) {
      const r = await record(ino);
      if (r.target === undefined) throw fsError("EINVAL");
      return r.target;
    },

    async mknod(c, parent, name, mode, rdev) {
      checkName(name);
      checkReserved(parent, name);
      const reg = (mode & S_IFMT) === S_IFREG || (mode & S_IFMT) === 0;
      const m = reg ? S_IFREG | (mode & 0o7777) : mode;
      const r = learn(await changing([parent], () => store.create(parent, name, { mode: m, uid: c.uid, gid: c.gid, rdev, holder: reg ? nodeId : "", above: maxSeen })));
      dirChanged(parent, [name, r.ino]);
      if (reg) {
        try {
          fs.closeSync(createLocalFile(root, await paths.pathOf(r.ino), O_WRONLY, r));
        } catch (e) {
          await rollback(parent, name, false);
          throw e;
        }
      }
      return told(parent, name, r);
    },

    async mkdir(c, parent, name, mode) {
      checkName(name);
      checkReserved(parent, name);
      const r = learn(await changing([parent], () => store.create(parent, name, { mode: S_IFDIR | (mode & 0o7777), uid: c.uid, gid: c.gid, above: maxSeen })));
      dirChanged(parent, [name, r.ino]);
      const p = await paths.pathOf(r.ino);
      try {
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
      } catch (e) {
        await rollback(parent, name, true);
        throw e;
      }
      return told(parent, name, r);
    },

    async unlink(_c, parent, name) {
      const path = await paths.childPath(parent, name);
      const r = await changing([parent], () => store.remove(parent, name, false, path));
      dirChanged(parent, undefined, name);
      if (!(r.nlink === 0 && r.held !== undefined && o.retire?.(path, r.ino, r.held))) root.remove(path);
      await dropped(r);
    },

    async rmdir(_c, parent, name) {
      const path = await paths.childPath(parent, name);
      const r = await changing([parent], () => store.remove(parent, name, true, path));
      dirChanged(parent, undefined, name);
      dropListing(r.ino);
      root.remove(path);
      forget(r.ino);
    },

    async symlink(c, parent, name, target) {
      checkName(name);
      checkReserved(parent, name);
      if (Buffer.byteLength(target) > 4095) throw fsError("ENAMETOOLONG");
      const r = learn(await changing([parent], () => store.create(parent, name, { mode: S_IFLNK | 0o777, uid: c.uid, gid: c.gid, size: Buffer.byteLength(target), target, above: maxSeen })));
      dirChanged(parent, [name, r.ino]);
      const p = await paths.pathOf(r.ino);
      try {
        makeLocal(root, p, () => root.symlink(target, p));
        root.chown(p, r.uid, r.gid);
      } catch (e) {
        await rollback(parent, name, false);
        throw e;
      }
      return told(parent, name, r);
    },

    async rename(_c, parent, name, newParent, newName, flags) {
      checkName(newName);
      checkReserved(newParent, newName);
      const known = RENAME_NOREPLACE | RENAME_EXCHANGE;
      if (flags & ~known || flags === known) throw fsError("EINVAL");
      const fromPath = await paths.childPath(parent, name);
      const toPath = await paths.childPath(newParent, newName);
      const r = await changing([parent, newParent], () => store.rename(parent, name, newParent, newName, flags, fromPath, toPath));
      if (r.exchanged) {
        dirChanged(parent, [name, r.exchanged]);
        dirChanged(newParent, [newName, r.ino]);
      } else {
        dirChanged(parent, undefined, name);
        dirChanged(newParent, [newName, r.ino]);
      }
      if (r.replaced?.dir) dropListing(r.replaced.ino);
      if (r.exchanged) {
        exchangeLocal(root, fromPath, toPath);
        forget(r.exchanged);
      } else if (fromPath !== toPath) {
        if (r.replaced) root.remove(toPath);
        if (root.typeOf(fromPath) !== undefined) makeLocal(root, toPath, () => root.rename(fromPath, toPath));
      }
      forget(r.ino);
      await dropped(r.replaced);
    },

    async link(_c, ino, newParent, newName) {
      checkName(newName);
      checkReserved(newParent, newName);
      const src = await paths.pathOf(ino);
      const dst = await paths.childPath(newParent, newName);
      const r = await changing([newParent], () => store.link(ino, newParent, newName, src, dst));
      dirChanged(newParent, [newName, ino]);
      // The nodes holding the bytes link them under the new name (told through their todo lists);
      // this one too if it is one of them, or has the symlink. Any node can make the link.
      const mine = isReg(r.mode) ? (await store.locations(ino)).get(nodeId) === r.version : root.typeOf(src) === "link";
      if (mine) linkLocal(src, dst);
      return told(newParent, newName, r);
    },

    async open(_c, ino, flags) {
      // Close-to-open: with other nodes about, open() reads the record and its holders fresh.
      // Assigned by fresh() too: the ! tells the compiler so.
      let r!: Inode;
      let here = true;
      let holders: Holders | undefined;
      const fresh = async () => {
        const [rec, h] = await Promise.all([store.get(ino), store.holders(ino)]);
        r = learn(rec);
        holders = h;
        here = h.data.get(nodeId) === r.version || (h.data.size === 0 && r.size === 0);
      };
      const acc = flags & O_ACCMODE;
      const writable = acc === O_WRONLY || acc === O_RDWR;
      // Before the record is read: the bytes to write over are those of the last writer's close.
      const leased = writable && !o.soleNode && !!o.remote && (await takeWriteLease(ino));
      try {
        if (o.soleNode || !o.remote) r = await record(ino);
        else await fresh();
        sameFile(r);
        if (isDir(r.mode)) throw fsError("EISDIR");
      } catch (e) {
        if (leased && !hasWriter(ino)) releaseWriteLease(ino);
        throw e;
      }
      const path = await paths.pathOf(ino);
      let fd: number;
      let ranges: RangeReader | undefined;
      let got: { fd: number } | { ranges: RangeReader } | undefined;
      if (here && o.remote && !o.soleNode && r.size > 0 && root.typeOf(path) !== "file") {
        // Listed as holding it, yet the file is not here (a queued change not applied yet, or Redis
        // put back an older record after losing writes): the copies elsewhere, rather than EIO.
        await o.catchUp?.();
        if (root.typeOf(path) !== "file") here = false;
      }
      // Another node's bytes: a copy of this version in the cache, or ranges from a holder. While the
      // holder is writing a new version the old one may be gone and the new one not whole yet: wait
      // (bounded) for the write's close and read what it published, rather than fail.
      const deadline = Date.now() + CHANGING_WAIT_MS;
      let taken = false;
      let pause = 10;
      while (!here && !got && !taken) {
        const change = nextDataChange(ino);
        try {
          if (!writable) got = await o.remote!.open(ino, r.version, path, r.size, holders, { dir: r.parent, list: () => siblingsOf(ino, r.parent) });
          else {
            // About to write another node's bytes: this node takes a copy into its root and becomes the holder.
            if (flags & O_TRUNC) fs.closeSync(createLocalFile(root, path, O_WRONLY, r));
            else {
              root.ensureDir(dirname(path));
              await o.remote!.fetchTo(ino, r.version, path, r.size, r, holders);
            }
            if (r.nlink > 1) await linkAllNames(ino, path);
            taken = true;
          }
        } catch (e) {
          if (!(e instanceof FsError && e.errno === E.EIO) || Date.now() >= deadline) throw e;
          const was = r.version;
          await fresh();
          if (r.version !== was) continue;
          if (!(e instanceof ChangingCopy)) throw e;
          // Polled too: the holder refuses reads until its writer's handle is released, which
          // publishes nothing when the close already did.
          await change.wait(Math.min(pause, deadline - Date.now()));
          pause = Math.min(pause * 2, CHANGING_POLL_MS);
          await fresh();
        } finally {
          change.cancel();
        }
      }
      if (got) {
        if ("fd" in got) fd = got.fd;
        else {
          fd = -1;
          ranges = got.ranges;
        }
      } else {
        if (here && writable && !(flags & O_TRUNC) && o.remote && !o.soleNode && r.size > 0 && !hasWriter(ino)) {
          // Written in place from now on, while the record still names the closed version: other
          // nodes opening it meanwhile read that version from a copy kept aside.
          const intact = steady(ino);
          let rfd: number | undefined;
          try {
            rfd = root.openFile(path, O_RDONLY);
          } catch {
            // Not at its path here yet (a rename to follow): the open below catches up; nothing kept.
          }
          if (rfd !== undefined) {
            try {
              await o.remote.preserve(ino, r.version, rfd, r.size, intact);
            } finally {
              fs.closeSync(rfd);
            }
          }
        }
        const openLocal = () => root.openFile(path, flags & KEEP_OPEN_FLAGS);
        try {
          fd = openLocal();
        } catch (e) {
          const n = errnoOf(e);
          if (n !== E.ENOENT && n !== E.ENOTDIR && n !== E.ELOOP) throw e;
          // Renamed by another node and not yet followed on this disk: catch up, then try once more.
          await o.catchUp?.();
          try {
            fd = openLocal();
          } catch {
            throw new FsError(E.EIO, `bytes of ${path} are not on this node`);
          }
        }
      }
      const h: Handle = { ino, fd, writable, dirty: false, ...(ranges ? { ranges } : {}), ...(writable ? {} : { reads: { version: r.version, size: r.size } }) };
      const fh = addHandle(h, r);
      // Close-to-open: the kernel may still hold the size of another version (its attribute cache,
      // or a reply computed before this open), and would cut reads of these bytes short at it, or
      // fill them out with zeros. After addHandle: liveAttr answers for it from now on.
      const told = kernelVersion.get(ino);
      const lastOpened = openedVersion.get(ino);
      if (!o.soleNode && told !== undefined && (told !== r.version || (lastOpened !== undefined && lastOpened !== r.version))) {
        await o.refreshKernelAttrs?.(ino);
        kernelVersion.set(ino, r.version);
      }
      if (flags & O_TRUNC && r.size !== 0) {
        try {
          fs.ftruncateSync(fd, 0);
          r = await commit(h);
        } catch (e) {
          await vfs.release(_c, ino, fh, false);
          throw e;
        }
      }
      // Pages cached by the kernel stay valid while the version is the one they were read at.
      const keepCache = openedVersion.get(ino) === r.version;
      if (openedVersion.size >= OPENED_MAX) openedVersion.clear();
      openedVersion.set(ino, r.version);
      return { fh, ...(fd >= 0 ? { fd } : {}), keepCache } satisfies OpenReply;
    },

    async create(c, parent, name, mode, flags) {
      checkName(name);
      checkReserved(parent, name);
      const acc = flags & O_ACCMODE;
      const localFlags = (flags & KEEP_OPEN_FLAGS & ~O_ACCMODE) | (acc === O_RDONLY ? O_RDWR : acc);
      let r: Inode;
      let fd: number;
      if (o.soleNode && cache.listed(parent, name) === null) {
        // A sole node with the directory's whole listing knows the name is free: the record is made
        // here and written behind (no other node can claim the name meanwhile).
        const p = await record(parent);
        if (!isDir(p.mode)) throw fsError("ENOTDIR");
        const now = nowNs();
        const gid = p.mode & S_ISGID ? p.gid : c.gid;
        r = { ino: await nextIno(), mode: S_IFREG | (mode & 0o7777), uid: c.uid, gid, rdev: 0, size: 0, nlink: 1, atime: now, mtime: now, ctime: now, version: newVersion(), gen: newGeneration(), parent, name };
        paths.learn(r);
        fd = createLocalFile(root, await paths.pathOf(r.ino), localFlags, r);
        learn(r);
        // The directory's new times are known here too: no round trip queued behind the write.
        learn({ ...p, mtime: now, ctime: now });
        dirChanged(parent, [name, r.ino]);
        deferred("create", r.ino, store.create(parent, name, { mode: r.mode, uid: r.uid, gid: c.gid, holder: nodeId, ino: r.ino, version: r.version, gen: r.gen, mtime: now, atime: now }));
      } else {
        r = learn(await changing([parent], () => store.create(parent, name, { mode: S_IFREG | (mode & 0o7777), uid: c.uid, gid: c.gid, holder: nodeId, above: maxSeen })));
        dirChanged(parent, [name, r.ino]);
        try {
          fd = createLocalFile(root, await paths.pathOf(r.ino), localFlags, r);
        } catch (e) {
          await rollback(parent, name, false);
          throw e;
        }
      }
      const fh = addHandle({ ino: r.ino, fd, writable: true, dirty: false }, r);
      openedVersion.set(r.ino, r.version);
      return { attr: told(parent, name, r), open: { fh, fd, keepCache: false } };
    },

    async read(_c, _ino, fh, offset, size) {
      const h = handleOf(fh);
      if (h.ranges) {
        const d = await h.ranges.read(offset, size);
        o.onIo?.("read", d.length);
        return d;
      }
      const buf = Buffer.allocUnsafe(size);
      const n = fs.readSync(h.fd, buf, 0, size, offset);
      o.onIo?.("read", n);
      return buf.subarray(0, n);
    },

    async write(_c, _ino, fh, offset, data) {
      const h = handleOf(fh);
      const n = fs.writeSync(h.fd, data, 0, data.length, offset);
      h.dirty = true;
      o.onIo?.("write", n);
      return n;
    },

    async flush(_c, ino, fh, dirty) {
      const h = handleOf(fh);
      if (dirty || h.dirty) await commit(h);
      // The turn goes back at close: the kernel's release comes later, and by then this node's next
      // open may have run, keeping the turn from another node's writer for good.
      if (h.writable && leases.has(ino) && !hasWriter(ino, h)) releaseWriteLease(ino);
    },

    async release(_c, ino, fh, dirty) {
      const h = handles.get(fh);
      if (!h) return;
      try {
        if ((dirty || h.dirty) && !purgeOnClose.has(ino)) await commit(h).catch((e: unknown) => {
          // Unlinked everywhere meanwhile: nothing to publish.
          if (!(e instanceof FsError && e.errno === E.ENOENT)) throw e;
        });
      } finally {
        if (h.fd >= 0) fs.closeSync(h.fd);
        h.ranges?.close();
        handles.delete(fh);
        freeFh.push(fh);
        const o = byIno.get(ino);
        o?.handles.delete(h);
        if (h.writable && leases.has(ino) && !hasWriter(ino)) releaseWriteLease(ino);
        if (o && o.handles.size === 0) {
          byIno.delete(ino);
          if (purgeOnClose.delete(ino)) await store.purge(ino);
        }
      }
    },

    async fsync(_c, _ino, fh, datasync, dirty) {
      const h = handleOf(fh);
      if (h.fd < 0) return;
      if (datasync) fs.fdatasyncSync(h.fd);
      else fs.fsyncSync(h.fd);
      if (dirty || h.dirty) await commit(h);
    },

    async opendir(_c, ino) {
      const list = await store.listDir(ino);
      const r = learn(await store.get(ino));
      const fh = allocFh();
      dirs.set(fh, { entries: [{ name: ".", ino, type: S_IFDIR >> 12 }, { name: "..", ino: r.parent || 1, type: S_IFDIR >> 12 }, ...list] });
      return fh;
    },

    async readdir(_c, _ino, fh, offset, max, plus) {
      const d = dirs.get(fh);
      if (!d) throw fsError("EBADF");
      const slice = d.entries.slice(offset, offset + max);
      const out: DirEntry[] = [];
      if (!plus) {
        slice.forEach((e, i) => out.push({ name: e.name, next: offset + i + 1, attr: { ino: e.ino, mode: e.type << 12, nlink: 1, uid: 0, gid: 0, rdev: 0, size: 0, atime: 0n, mtime: 0n, ctime: 0n } }));
        return out;
      }
      const recs = await store.getMany(slice.map((e) => e.ino));
      slice.forEach((e, i) => {
        const r = recs[i];
        if (r) out.push({ name: e.name, next: offset + i + 1, attr: told(_ino, e.name, learn(r)) });
      });
      return out;
    },

    async releasedir(_c, _ino, fh) {
      dirs.delete(fh);
      freeFh.push(fh);
    },

    async statfs(): Promise<StatFs> {
      const s = fs.statfsSync(root.path);
      return { bsize: s.bsize, frsize: s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree, favail: s.ffree, namemax: NAME_MAX };
    },

    async setxattr(_c, ino, name, value, flags) {
      checkXattrName(name);
      if (value.length > XATTR_SIZE_MAX) throw fsError("E2BIG");
      await store.setXattr(ino, name, value, flags);
    },

    async getxattr(_c, ino, name) {
      checkXattrName(name);
      const v = await store.getXattr(ino, name);
      if (!v) throw fsError("ENODATA");
      return v;
    },

    async listxattr(_c, ino) {
      return store.listXattr(ino);
    },

    async removexattr(_c, ino, name) {
      checkXattrName(name);
      await store.removeXattr(ino, name);
    },

    async access(c, ino, mask) {
      const r = await record(ino);
      if (mask === 0 || c.uid === 0) {
        if (c.uid === 0 && mask & 1 && !isDir(r.mode) && !(r.mode & 0o111)) throw fsError("EACCES");
        return;
      }
      const bits = c.uid === r.uid ? (r.mode >> 6) & 7 : c.gid === r.gid ? (r.mode >> 3) & 7 : r.mode & 7;
      if ((bits & mask) !== mask) throw fsError("EACCES");
    },

    steady,

    writing(ino) {
      // From the write turn on: an open for writing is under way before its handle exists.
      return leases.has(ino) || hasWriter(ino);
    },

    invalidate(inv) {
      cache.invalidate(inv);
      for (const ino of [...inv.data, ...inv.inodes]) for (const w of dataWaiters.get(ino) ?? []) w();
      for (const ino of inv.inodes) if (byIno.has(ino)) void store.get(ino).then(learn, () => {});
    },

    resync() {
      cache.resync();
    },

    async closeAll() {
      for (const [fh, h] of handles) {
        if (h.dirty) await commit(h).catch(() => {});
        try {
          fs.closeSync(h.fd);
        } catch {
          // already closed
        }
        handles.delete(fh);
      }
      byIno.clear();
    },
  };

  return vfs;
}

function checkXattrName(name: string): void {
  if (Buffer.byteLength(name) > 255) throw fsError("ERANGE");
  // ACLs, file capabilities and SELinux labels are not kept (the shim answers their reads itself).
  if (name.startsWith("system.posix_acl_") || name === "security.capability" || name === "security.selinux") throw fsError("EOPNOTSUPP");
  if (!/^(user|trusted|security|system)\./.test(name)) throw fsError("EOPNOTSUPP");
}
