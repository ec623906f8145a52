import { inoOfIdentity, type MetadataStore, type TodoEntry } from "../meta/store.ts";
import type { LocalDir } from "../local/local-dir.ts";
import { isDir } from "./attr.ts";
import { exchangeLocal, liveIn, makeLocal, removeDir } from "./local-files.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import { createPathCache } from "./paths.ts";
import type { Logger } from "../util/log.ts";
import type { RwLock } from "../util/rw-lock.ts";

/**
 * Makes the local disk follow renames and deletes that other nodes did to files this node holds,
 * from this node's todo list: at start (changes made while it was down) and when told.
 */
export interface TodoApplier {
  /** Apply every queued change; resolves when done. Calls are serialized. */
  drain(): Promise<void>;
  /** Whether a drain is under way or asked for (changes taken from the list may not be made yet). */
  applying(): boolean;
  /** Resolves when the drains asked for so far are done; asks for none. */
  applied(): Promise<void>;
}

function safe(p: string): boolean {
  return p.startsWith("/") && !p.includes("\0") && !p.split("/").some((s) => s === ".." || s === ".") && p.split("/")[1] !== RESERVED_NAME;
}

export interface TodoApplierOptions {
  root: LocalDir;
  nodeId: string;
  store: MetadataStore;
  log: Logger;
  /** Whether this node has ino open for writing (its close may make it the holder again: a drop waits). */
  writing(ino: number): boolean;
  /**
   * The store as this node's filesystem asks it: the creates it holds back reach Redis before each
   * question (held-creates.ts). By default store.
   */
  asked?(): MetadataStore;
  /** The last name of a file held here goes: true when its bytes were kept for readers elsewhere. */
  retire?: (path: string, ino: number, version: number) => boolean;
  /** The last name of a file held here (at version) went: noted as its bytes go (VfsOptions.deleting). */
  deleting?: (ino: number, version: number) => void;
  /**
   * The VFS's lock on local directories (VfsContext.localDirs), held alone while a rename moves them:
   * a create here reads its path and makes its file with no move in between, or the file lands in
   * a directory the move left behind (and its close's success would read EIO).
   */
  localDirs: RwLock;
  /**
   * Directories moved on this disk (under localDirs, alone): the paths this node's filesystem cached
   * may be of before that move, which a create would then make again where the directory was.
   */
  movedDirs?: () => void;
}

/** How soon a drop put off while this node wrote the file is asked again. */
const RETRY_MS = 500;

export function createTodoApplier(o: TodoApplierOptions): TodoApplier {
  const { root } = o;

  /**
   * Whether the local file at p is the one a change names (an unmarked regular file, kept by an older
   * mcfs, is taken to be; a directory or symlink made there since never is).
   */
  const isTheFile = (p: string, id: string | undefined) => {
    if (!id) return true;
    if (root.typeOf(p) !== "file") return false;
    const have = root.identityOf(p);
    if (have === undefined || have === id) return true;
    o.log.info({ path: p, want: id, have }, "a queued change is for another file than the one here: left alone");
    return false;
  };

  const asked = () => o.asked?.() ?? o.store;

  /** The inode the namespace has at path now, if any. */
  async function inoAt(path: string): Promise<number | undefined> {
    const store = asked();
    let ino = 1;
    try {
      for (const name of path.split("/").filter(Boolean)) ino = (await store.lookup(ino, name)).ino;
      return ino;
    } catch {
      return undefined;
    }
  }

  /**
   * A file at to with another identity than the one moved (or linked) there is the file the rename replaced,
   * unless the namespace has it at to now: one this node made whose create reached the store only
   * after the rename (written behind), and which replaced the moved file in turn. That one stays.
   */
  async function newerAt(to: string, id: string | undefined): Promise<boolean> {
    if (root.typeOf(to) !== "file") return false;
    const there = root.identityOf(to);
    if (there === undefined || there === id) return false;
    return inoOfIdentity(there) === (await inoAt(to));
  }

  async function move(from: string, to: string, id?: string): Promise<void> {
    const t = root.typeOf(from);
    if (t === undefined || !isTheFile(from, id)) return;
    if (await newerAt(to, id)) {
      // The moved file's bytes go too once nothing names it any more (that newer file replaced it).
      const moved = inoOfIdentity(id);
      const gone = moved > 0 && !(await asked().get(moved).then((r) => r.nlink > 0, () => false));
      if (gone) root.remove(from);
      o.log.warn({ from, to, movedFileKept: !gone }, "a queued rename met a newer file made here under its new name: the newer one is kept");
      return;
    }
    // A directory this node made there (its files arrived before the queued rename; or during that
    // wait, by what makes directories here outside ctx.localDirs) stays: removed, its files would go.
    if (t === "dir" && root.typeOf(to) === "dir") return merge(from, to);
    await removeDir(root, to, liveIn(asked()), o.log);
    makeLocal(root, to, () => root.rename(from, to));
  }

  /**
   * Move what from holds into to; what to has already is newer (made after the rename) and stays.
   * Of what is left in from, a file the namespace has elsewhere goes there (removeDir).
   */
  async function merge(from: string, to: string): Promise<void> {
    for (const e of root.list(from)) {
      const a = `${from}/${e.name}`, b = `${to}/${e.name}`;
      const there = root.typeOf(b);
      if (there === undefined) root.rename(a, b);
      else if (e.type === "dir" && there === "dir") await merge(a, b);
      else o.log.warn({ path: a, kept: b }, "a queued rename met a newer file of the same name: the newer one is kept");
    }
    await removeDir(root, from, liveIn(asked()), o.log);
  }

  /** Whether the namespace has a directory at path now (made again after the change was queued). */
  async function isDirNow(path: string): Promise<boolean> {
    const ino = await inoAt(path);
    return ino !== undefined && (await o.store.get(ino).then((r) => isDir(r.mode), () => false));
  }

  const isFile = (p: string) => {
    const t = root.typeOf(p);
    return t !== undefined && t !== "dir";
  };

  const moving = (fn: () => void | Promise<void>): Promise<void> => o.localDirs.exclusive(async () => fn());

  async function apply(e: TodoEntry): Promise<void> {
    const paths = e.op === "mv" || e.op === "swap" || e.op === "link" ? [e.from, e.to] : [e.path];
    if (!paths.every(safe)) {
      o.log.warn({ entry: e }, "todo entry with an unsafe path ignored");
      return;
    }
    switch (e.op) {
      case "rm": {
        if (!isFile(e.path) || !isTheFile(e.path, e.id)) return;
        const ino = inoOfIdentity(e.id);
        if (e.last && e.v && ino) o.deleting?.(ino, Number(e.v));
        if (!(e.last && e.v && ino && o.retire?.(e.path, ino, Number(e.v)))) root.unlink(e.path);
        return;
      }
      case "rmdir":
        if (await isDirNow(e.path)) return;
        return moving(() => removeDir(root, e.path, liveIn(asked()), o.log));
      case "mv":
        return moving(async () => {
          await move(e.from, e.to, e.id);
          if (!e.id) o.movedDirs?.();
        });
      case "link":
        if (root.typeOf(e.from) !== "file" || !isTheFile(e.from, e.id)) return;
        if (await newerAt(e.to, e.id)) return void o.log.warn({ from: e.from, to: e.to }, "a queued link met a newer file made here under its name: the newer one is kept");
        makeLocal(root, e.to, () => root.link(e.from, e.to));
        return;
      case "drop": {
        // Every name of a hard-linked file: this node kept the old bytes under each.
        const names = [e.path];
        // A fresh cache: names change under a long-lived one.
        const where = createPathCache(o.store);
        for (const { parent, name } of await o.store.extraNames(e.ino)) {
          const p = await where.childPath(parent, name).catch(() => undefined);
          if (p && safe(p) && !names.includes(p)) names.push(p);
        }
        // Asked after the awaits, and then unlinked at once: an open for writing that began meanwhile keeps the file.
        if ((await o.store.locations(e.ino)).has(o.nodeId)) return;
        // Being written here: asked again once the writer is done (its close may make this node the
        // holder again, else the stale file would stay on this disk for good).
        if (o.writing(e.ino)) return void later.push(e);
        for (const p of names) if (isFile(p) && isTheFile(p, e.id)) root.unlink(p);
        return;
      }
      case "swap":
        return moving(() => {
          exchangeLocal(root, e.from, e.to);
          o.movedDirs?.();
        });
    }
  }

  let chain: Promise<void> = Promise.resolve();
  let running = 0;
  /**
   * A drain asked for and not begun: later asks share it (it reads the list after them all). A burst
   * of notices (hundreds of unlinks a second) costs a read of the list or two, not one each.
   */
  let queued: Promise<void> | undefined;
  /** Drops put off while this node wrote the file, and the timer that asks them again. */
  let later: TodoEntry[] = [];
  let retry: ReturnType<typeof setTimeout> | undefined;
  const applier = {
    applying: () => running > 0,
    applied: () => chain,
    drain() {
      if (queued) return queued;
      running++;
      queued = chain = chain.then(async () => {
        queued = undefined;
        const entries = [...later.splice(0), ...(await o.store.takeTodo())];
        for (const e of entries) {
          try {
            await apply(e);
          } catch (err) {
            o.log.error({ entry: e, err: (err as Error).message }, "could not apply another node's change to the local disk");
          }
        }
        if (entries.length) o.log.info({ changes: entries.length }, "applied other nodes' renames and deletes to the local disk");
        if (later.length && !retry) retry = setTimeout(() => ((retry = undefined), void applier.drain()), RETRY_MS).unref();
      }).catch((err: unknown) => o.log.warn({ err: (err as Error).message }, "reading the todo list failed")).finally(() => void running--);
      return chain;
    },
  };
  return applier;
}
