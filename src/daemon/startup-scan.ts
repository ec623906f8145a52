import type * as fs from "node:fs";
import type { LocalDir, EntryType } from "../local/local-dir.ts";
import type { MetadataStore } from "../meta/store.ts";
import type { Logger } from "../util/log.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import { PARTIAL_MARK } from "../vfs/remote-data.ts";
import { E, FsError } from "../util/errno.ts";

export interface ScanResult {
  dirs: number;
  published: number;
  known: number;
  /** Known files whose record was behind the local file (a deferred write lost in a crash). */
  repaired: number;
  skipped: number;
}

const BATCH = 256;

/**
 * Publish what is already under the root path (files put there before start, or while mcfs was down)
 * into the namespace. Names the namespace already has are left as they are: Redis is authoritative.
 */
export async function scanRoot(root: LocalDir, store: MetadataStore, nodeId: string, log: Logger, repair: boolean, onProgress?: (n: number) => void): Promise<ScanResult> {
  const res: ScanResult = { dirs: 0, published: 0, known: 0, repaired: 0, skipped: 0 };
  const queue: { ino: number; path: string }[] = [{ ino: 1, path: "" }];
  while (queue.length) {
    const { ino, path } = queue.pop()!;
    res.dirs++;
    let names: { name: string; type: EntryType }[];
    try {
      names = root.list(path);
    } catch (e) {
      log.warn({ path, err: (e as Error).message }, "start-up scan cannot read directory");
      continue;
    }
    const existing = new Map((await store.listDir(ino)).map((e) => [e.name, e]));
    // Not published: mcfs's own state, and partial copies left by an interrupted fetch.
    const todo = names.filter((d) => !(ino === 1 && d.name === RESERVED_NAME) && !d.name.includes(PARTIAL_MARK));
    for (let i = 0; i < todo.length; i += BATCH) {
      const batch = todo.slice(i, i + BATCH);
      // A sole node writes some metadata behind its replies: a file newer than its record is repaired.
      const known = repair ? batch.filter((d) => d.type === "file" && existing.get(d.name)?.type === 0o10) : [];
      const recs = new Map((await store.getMany(known.map((d) => existing.get(d.name)!.ino))).map((r, k) => [known[k]!.name, r]));
      await Promise.all(batch.map(async (d) => {
        const rel = `${path}/${d.name}`;
        const have = existing.get(d.name);
        if (have) {
          res.known++;
          if (d.type === "dir" && have.type === 0o04) queue.push({ ino: have.ino, path: rel });
          const rec = recs.get(d.name);
          const st = rec && root.stat(rel);
          if (rec && st) {
            // Newer by more than a millisecond: utimes on the local copy rounds, but never by that much.
            if (Number(st.size) !== rec.size || st.mtimeNs > rec.mtime + 1_000_000n) {
              await store.setData(rec.ino, Number(st.size), st.mtimeNs, st.ctimeNs, nodeId, rel);
              res.repaired++;
            }
          }
          return;
        }
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
          res.published++;
          if (isDir) queue.push({ ino: rec.ino, path: rel });
        } catch (e) {
          // Another node published the same name meanwhile: keep theirs.
          if (!(e instanceof FsError && e.errno === E.EEXIST)) throw e;
          res.known++;
        }
      }));
      onProgress?.(res.published + res.known);
    }
  }
  return res;
}
