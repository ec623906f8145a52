import type * as fs from "node:fs";
import { dirname } from "node:path";
import { closeSync, constants, fstatSync, type BigIntStats } from "node:fs";
import type { LocalDir, EntryType } from "../local/local-dir.ts";
import { dirIdentity, fileIdentity, inoOfIdentity, type Holders, type Inode, type MetadataStore } from "../meta/store.ts";
import { dirMarkAt } from "../vfs/dir-marks.ts";
import { isDir as isDirMode } from "../util/file-mode.ts";
import type { Logger } from "../util/log.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import { createPathCache } from "../vfs/paths.ts";
import { E, FsError } from "../util/errno.ts";
import { RENAME_EXCHANGE } from "../fuse/types.ts";

export interface ScanResult {
  dirs: number;
  published: number;
  known: number;
  /** Known files whose local bytes became their new version (see mustRepublish). */
  repaired: number;
  skipped: number;
  /** Files of inodes the namespace no longer has, moved to .mcfs/orphans (see scanRoot's lost). */
  setAside: number;
}

/** Mark a file just published with its new inode's identity (see LocalDir.markIdentity), over any old mark. */
function markFile(root: LocalDir, p: string, id: string): void {
  let fd: number;
  try {
    fd = root.openFile(p, constants.O_RDONLY);
  } catch {
    return;
  }
  try {
    root.markIdentity(fd, id);
  } finally {
    closeSync(fd);
  }
}

/**
 * A known file's stat and identity mark, with one open; id: its identity mark, made if it has none
 * (a file held here). Not a regular file, or gone: what stat says, and nothing marked.
 */
function inspect(root: LocalDir, p: string, id: string | undefined): { st: BigIntStats; mark?: string } | undefined {
  let fd: number;
  try {
    fd = root.openFile(p, constants.O_RDONLY);
  } catch {
    const st = root.stat(p);
    return st && { st };
  }
  try {
    const st = fstatSync(fd, { bigint: true });
    const mark = root.readIdentity(fd);
    if (id !== undefined && mark === undefined) root.markIdentity(fd, id);
    return mark === undefined ? { st } : { st, mark };
  } finally {
    closeSync(fd);
  }
}

const BATCH = 256;

/**
 * Publish what is already under the root path (files put there before start, or while mcfs was down)
 * into the namespace. Names the namespace already has are left as they are: Redis is authoritative.
 */
/**
 * Whether the local file of a known record must become its new version:
 * - this node holds the record's version, but the file differs from it (size, or written after its
 *   mtime): a write whose close never published it (a crash), or a record written behind and lost;
 * - no node holds the record's version at all: these bytes are the only ones left, better than none.
 * A file that another node holds a newer version of is left alone (never served from here).
 */
function mustRepublish(rec: Inode, h: Holders, st: BigIntStats, nodeId: string): boolean {
  const size = Number(st.size);
  // Newer by more than a millisecond: utimes on the local copy rounds, but never by that much.
  const changed = size !== rec.size || st.mtimeNs > rec.mtime + 1_000_000n;
  if (h.data.get(nodeId) === rec.version) return changed;
  const held = [...h.data.values()].some((v) => v === rec.version);
  return !held && (size > 0 || rec.size > 0);
}

export interface ScanOptions {
  onProgress?: (n: number) => void;
  /** A file open for writing here (a scan while serving): its close publishes it; never before, half-written. */
  writing?: (ino: number) => boolean;
}

/**
 * lost: what becomes of a file mcfs kept for an inode the namespace no longer has (its identity mark
 * names it): "republish" when Redis is known to have lost writes (or no other node could have
 * deleted it: a private Redis), else "set-aside" into .mcfs/orphans if the store remembers the inode
 * as deleted — it was deleted while this node was away, and must not come back — and published again
 * if not (Redis lost its create: an inode counter reserved ahead hides that). A file whose inode
 * number Redis never handed out (past its counter) is always published again: Redis lost it.
 */
export async function scanRoot(root: LocalDir, store: MetadataStore, nodeId: string, log: Logger, lost: "republish" | "set-aside", o: ScanOptions = {}): Promise<ScanResult> {
  const res: ScanResult = { dirs: 0, published: 0, known: 0, repaired: 0, skipped: 0, setAside: 0 };
  const paths = createPathCache(store);

  /** Into .mcfs/orphans, kept, never published; why: for the log. */
  const setAside = (rel: string, id: string, why: string) => {
    const aside = `/${RESERVED_NAME}/orphans/${id.replace(":", "-")}`;
    try {
      root.ensureDir(`/${RESERVED_NAME}/orphans`);
      root.rename(rel, aside);
    } catch (e) {
      // Moved meanwhile (a queued change applied while a rescan runs): the next scan sees where it is.
      log.warn({ path: rel, err: (e as Error).message }, `${why}; it could not be set aside`);
      return;
    }
    res.setAside++;
    log.warn({ path: rel, keptAt: aside }, `${why}: set aside`);
  };

  /**
   * A file kept for inode ino (its mark: id) at rel, where the namespace did not have that inode
   * when its directory was read: its move was lost (a rename Redis lost, or this node's queued one).
   * The namespace is authoritative: the file goes to where it has ino if nothing is there here (or
   * changes places with the file there, if that one belongs at rel).
   * Else, if the namespace names another file rel (named), it is set aside, never left to pass for
   * that file; if rel is no name there, it is left. Where the namespace has it at rel now (a create
   * or rename that landed meanwhile), nothing is done.
   */
  async function misplaced(rel: string, ino: number, id: string, named: boolean): Promise<void> {
    const where = await paths.pathOf(ino).catch(() => undefined);
    if (where === rel) return;
    if (where !== undefined && root.typeOf(where) === "file" && (await swapped(rel, where, id))) return;
    if (where !== undefined && root.typeOf(where) === undefined) {
      try {
        root.ensureDir(dirname(where));
        root.rename(rel, where);
        log.warn({ path: rel, movedTo: where, ino }, "a local file was not where the namespace has its inode (a lost rename): moved there");
        res.repaired++;
        return;
      } catch (e) {
        log.warn({ path: rel, movedTo: where, err: (e as Error).message }, "a local file not where the namespace has its inode could not be moved there");
      }
    }
    if (named) setAside(rel, id, `a local file of inode ${ino} was under a name of another file`);
  }
  /**
   * The file at where is the one the namespace has at rel, and rel's (id) belongs at where: a swap
   * whose move was lost (of the two files, or of two directories holding files of the same name).
   * Exchanged, each then where the namespace has it; set aside in turn, neither would be read.
   */
  async function swapped(rel: string, where: string, id: string): Promise<boolean> {
    const there = root.identityOf(where);
    const other = inoOfIdentity(there);
    if (there === undefined || !(other > 1)) return false;
    const its = (await store.getMany([other]))[0];
    if (!its || fileIdentity(its.ino, its.gen) !== there) return false;
    if ((await paths.pathOf(other).catch(() => undefined)) !== rel) return false;
    // As read, with no await between: the other file's own check in this scan may have exchanged them already.
    if (root.identityOf(rel) !== id || root.identityOf(where) !== there) return false;
    try {
      root.rename(rel, where, RENAME_EXCHANGE);
    } catch (e) {
      log.warn({ path: rel, with: where, err: (e as Error).message }, "two local files each where the namespace has the other could not be exchanged");
      return false;
    }
    log.warn({ path: rel, with: where }, "two local files were each where the namespace has the other (a lost swap): exchanged");
    res.repaired += 2;
    return true;
  }

  /**
   * A local directory at rel, a name the namespace does not have, marked as a directory it has
   * elsewhere (a rename whose move was lost): moved there rather than published again under its old
   * name; where a directory is there already (made since), what can be is moved into it. Marked as
   * one removed since (its queued removal lost): removed, once what it holds is where it belongs
   * (emptyRemoved). True if either.
   */
  async function misplacedDir(rel: string): Promise<boolean> {
    let mark: string | undefined;
    try {
      mark = dirMarkAt(root, rel);
    } catch {
      return false;
    }
    const dir = inoOfIdentity(mark);
    if (mark === undefined || !(dir > 1) || mark !== dirIdentity(dir)) return false;
    const rec = (await store.getMany([dir]))[0];
    if (!rec && lost === "set-aside" && (await store.deleted([dir]))[0]) {
      await emptyRemoved(rel);
      if (root.list(rel).length) return false;
      root.rmdir(rel);
      log.warn({ path: rel, ino: dir }, "a local directory removed elsewhere while this node was away (its queued removal lost) was still here: removed, not published again");
      res.repaired++;
      return true;
    }
    if (!rec || !isDirMode(rec.mode)) return false;
    const where = await paths.pathOf(dir).catch(() => undefined);
    if (where === undefined || where === rel) return false;
    try {
      if (root.typeOf(where) === undefined) {
        root.ensureDir(dirname(where));
        root.rename(rel, where);
      } else {
        for (const e of root.list(rel)) if (root.typeOf(`${where}/${e.name}`) === undefined) root.rename(`${rel}/${e.name}`, `${where}/${e.name}`);
        const left = root.list(rel).length;
        if (left) log.warn({ path: rel, movedTo: where, left }, "a local directory's entries whose names its new place has already were left where they were");
        else root.rmdir(rel);
      }
    } catch (e) {
      log.warn({ path: rel, movedTo: where, err: (e as Error).message }, "a local directory not where the namespace has it could not be moved there");
      return false;
    }
    log.warn({ path: rel, movedTo: where, ino: dir }, "a local directory was not where the namespace has it (a lost rename): moved there");
    res.repaired++;
    queue.push({ ino: dir, path: where });
    return true;
  }

  /**
   * What a directory removed elsewhere still holds here (the deletes of its files lost too, or their
   * renames out of it): each file kept for an inode goes where the namespace has it, or aside if
   * deleted; directories in it likewise. Anything else is left, and the directory published as before.
   */
  async function emptyRemoved(rel: string): Promise<void> {
    for (const e of root.list(rel)) {
      const at = `${rel}/${e.name}`;
      if (e.type === "dir") {
        await misplacedDir(at);
        continue;
      }
      const id = e.type === "file" ? root.identityOf(at) : undefined;
      const ino = inoOfIdentity(id);
      if (id === undefined || !(ino > 1)) continue;
      const its = (await store.getMany([ino]))[0];
      if (its && fileIdentity(its.ino, its.gen) === id) await misplaced(at, ino, id, false);
      else if ((await store.deleted([ino]))[0]) setAside(at, id, "a file deleted while this node was away was still here, in a directory removed meanwhile");
    }
  }

  const queue: { ino: number; path: string }[] = [{ ino: 1, path: "" }];
  /** Directories scanned: one moved into place may be reached again through its parent. */
  const scanned = new Set<number>();
  // A kept file's inode number past the counter was handed out by a Redis that lost it since.
  let counter = (await store.inodeCounter()).counter;
  while (queue.length) {
    const { ino, path } = queue.pop()!;
    if (scanned.has(ino)) continue;
    scanned.add(ino);
    res.dirs++;
    let names: { name: string; type: EntryType }[];
    try {
      names = root.list(path);
    } catch (e) {
      log.warn({ path, err: (e as Error).message }, "start-up scan cannot read directory");
      continue;
    }
    const existing = new Map((await store.listDir(ino)).map((e) => [e.name, e]));
    // Not published: mcfs's own state (partial copies of an interrupted fetch too).
    const todo = names.filter((d) => !(ino === 1 && d.name === RESERVED_NAME));
    for (let i = 0; i < todo.length; i += BATCH) {
      const batch = todo.slice(i, i + BATCH);
      const known = batch.filter((d) => d.type === "file" && existing.get(d.name)?.type === 0o10);
      const inos = known.map((d) => existing.get(d.name)!.ino);
      const found = await store.recordsAndHolders(inos);
      const recs = new Map(known.map((d, k) => [d.name, found[k]]));
      await Promise.all(batch.map(async (d) => {
        const rel = `${path}/${d.name}`;
        const have = existing.get(d.name);
        if (have) {
          res.known++;
          if (d.type === "dir" && have.type === 0o04) queue.push({ ino: have.ino, path: rel });
          const known = recs.get(d.name);
          if (!known) return;
          const { r: rec, holders } = known;
          const seen = inspect(root, rel, holders.data.has(nodeId) ? fileIdentity(rec.ino, rec.gen) : undefined);
          if (!seen) return;
          const { st, mark } = seen;
          // Kept for another inode (one a rename replaced, its move not made: the queued one makes it): never this one's bytes.
          if (mark !== undefined && mark !== fileIdentity(rec.ino, rec.gen)) {
            const other = inoOfIdentity(mark);
            const its = other ? (await store.getMany([other]))[0] : undefined;
            log.warn({ path: rel, ino: rec.ino, mark }, "the local file under a known name is another inode's: not this one's bytes");
            if (its && fileIdentity(its.ino, its.gen) === mark) await misplaced(rel, other, mark, true);
            else setAside(rel, mark, "a local file of an inode the namespace no longer has was under a known name");
            return;
          }
          if (o.writing?.(rec.ino)) return;
          if (mustRepublish(rec, holders, st, nodeId)) {
            log.warn({ path: rel, ino: rec.ino, version: rec.version, size: rec.size, localSize: Number(st.size) }, "the local file is not the version its record says (a write cut short by a crash, or a record written behind and lost): published as a new version");
            await store.setData(rec.ino, Number(st.size), st.mtimeNs, st.ctimeNs, nodeId, rel);
            res.repaired++;
          }
          return;
        }
        const id = d.type === "file" ? root.identityOf(rel) : undefined;
        if (id !== undefined) {
          // A file mcfs kept for an inode, under a name the namespace does not have.
          const ino = inoOfIdentity(id);
          // Still being written here: published whole at its close, not half-written now.
          if (o.writing?.(ino)) return;
          const rec = ino ? (await store.getMany([ino]))[0] : undefined;
          if (rec && fileIdentity(rec.ino, rec.gen) === id) {
            // Queued renames were made before the scan: this one's was lost.
            await misplaced(rel, ino, id, false);
            return;
          }
          if (ino > counter) {
            // Never handed out as far as Redis knows now: it lost the file, and no number up to it may come again.
            await store.raiseInodeCounter(ino + 1);
            counter = ino + 1;
          } else if (lost === "set-aside" && (await store.deleted([ino]))[0]) {
            // Deleted while this node was away (its queued delete lost): kept, never published again.
            setAside(rel, id, "a file the namespace no longer has was still here, not published again");
            return;
          } else if (lost === "set-aside") {
            log.warn({ path: rel, ino }, "a file kept here is not in the namespace, and nothing says it was deleted (its create was cut off by a crash before it reached Redis, or Redis lost it): published again");
          }
        }
        if (d.type === "dir" && (await misplacedDir(rel))) return;
        const st: fs.BigIntStats | undefined = root.stat(rel);
        if (!st) {
          res.skipped++;
          return;
        }
        const mode = Number(st.mode);
        const isDir = st.isDirectory(), isFile = st.isFile(), isLink = st.isSymbolicLink();
        if (!isDir && !isFile && !isLink) {
          res.skipped++;
          return;
        }
        try {
          const rec = await store.create(ino, d.name, {
            mode, uid: Number(st.uid), gid: Number(st.gid), size: isDir ? 0 : Number(st.size),
            mtime: st.mtimeNs, atime: st.atimeNs, holder: isFile ? nodeId : "",
            ...(isLink ? { target: root.readlink(rel) } : {}),
          });
          if (isFile) markFile(root, rel, fileIdentity(rec.ino, rec.gen));
          res.published++;
          if (isDir) queue.push({ ino: rec.ino, path: rel });
        } catch (e) {
          // Another node published the same name meanwhile: keep theirs.
          if (!(e instanceof FsError && e.errno === E.EEXIST)) throw e;
          res.known++;
        }
      }));
      o.onProgress?.(res.published + res.known);
    }
  }
  return res;
}
