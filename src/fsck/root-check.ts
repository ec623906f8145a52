import { closeSync, constants, readFileSync } from "node:fs";
import type { LocalDir } from "../local/local-dir.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import { inoOfIdentity } from "../meta/store.ts";
import { pathOf, type Namespace } from "./namespace-check.ts";
import { E, FsError } from "../util/errno.ts";
import { isReg } from "../util/file-mode.ts";


export interface RootFindings {
  node: string;
  /** Regular files under the root path that no record has at that path. */
  withoutRecords: string[];
  /** Files this node is listed holding at the current version whose local size is not the record's (a write cut short). */
  sizeDiffers: { ino: number; path: string; size: number; localSize: number }[];
  /** Records this node is listed holding at their current version with no file of theirs here. */
  missing: { ino: number; path: string; version: number }[];
}

/** The node id kept with a root path (read beneath its fd, like everything else there). */
export function rootNodeId(root: LocalDir): string {
  let fd: number;
  try {
    fd = root.openFile(`/${RESERVED_NAME}/node-id`, constants.O_RDONLY);
  } catch (e) {
    if (e instanceof FsError && e.errno === E.ENOENT) throw new Error(`not a node's root path: it has no ${RESERVED_NAME}/node-id (a daemon makes it at its first start)`);
    throw e;
  }
  try {
    const id = readFileSync(fd, "utf8").trim();
    if (!id) throw new Error(`${root.path}/${RESERVED_NAME}/node-id is empty`);
    return id;
  } finally {
    closeSync(fd);
  }
}

/** Compare a node's root path with the namespace; onProgress: local entries seen so far. */
export function checkRoot(root: LocalDir, node: string, ns: Namespace, onProgress?: (n: number) => void): RootFindings {
  const f: RootFindings = { node, withoutRecords: [], sizeDiffers: [], missing: [] };
  /** Inodes with a file of theirs here: under a name of theirs, or marked with their identity (a rename not made yet). */
  const present = new Set<number>();
  let seen = 0;
  // Local directory path, and the namespace directory at the same path (none: nothing there is known).
  const queue: [string, number | undefined][] = [["", 1]];
  while (queue.length) {
    const [path, dir] = queue.pop()!;
    const entries = new Map((dir === undefined ? [] : (ns.inodes.get(dir)?.entries ?? [])).map((e) => [e.name, e]));
    for (const d of root.list(path)) {
      // mcfs's own state (partial copies of an interrupted fetch too): not namespace files.
      if (path === "" && d.name === RESERVED_NAME) continue;
      const rel = `${path}/${d.name}`;
      onProgress?.(++seen);
      const e = entries.get(d.name);
      if (d.type === "dir") {
        queue.push([rel, e && ns.inodes.get(e.ino)?.entries ? e.ino : undefined]);
        continue;
      }
      if (d.type !== "file") continue;
      const rec = e && ns.inodes.get(e.ino);
      if (rec && isReg(rec.mode)) {
        // A hard-linked file is here under each of its names: checked once.
        if (present.has(rec.ino)) continue;
        present.add(rec.ino);
        const st = root.stat(rel);
        if (st && rec.holders?.data.get(node) === rec.version && Number(st.size) !== rec.size) f.sizeDiffers.push({ ino: rec.ino, path: rel, size: rec.size, localSize: Number(st.size) });
        continue;
      }
      const marked = inoOfIdentity(root.identityOf(rel));
      if (marked && ns.inodes.get(marked)?.holders?.data.has(node)) present.add(marked);
      else f.withoutRecords.push(rel);
    }
  }
  for (const i of ns.inodes.values()) {
    const version = i.holders?.data.get(node);
    // Unreachable inodes have no path where a file of theirs could be looked for; an entry at another
    // version is a stale holder, reported (and dropped) by the cluster check.
    if (version === i.version && !present.has(i.ino) && ns.paths.has(i.ino)) f.missing.push({ ino: i.ino, path: pathOf(ns, i.ino), version });
  }
  return f;
}
