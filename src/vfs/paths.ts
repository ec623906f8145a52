import type { Inode, MetadataStore } from "../meta/store.ts";
import { isDir } from "./attr.ts";

/**
 * Namespace path of each inode, from its primary (parent, name), cached. The bytes of a file live at
 * that path under the node's root path, so paths are needed for every local data operation.
 */
export interface PathCache {
  /**
   * Directory names read from the store so far that were new here or changed: a path of names all
   * read before some count was seen is of the namespace as it was then.
   */
  readonly dirNamesRead: number;
  learn(r: Inode): void;

  forget(ino: number): void;
  clear(): void;
  /**
   * Forget every directory's name (directories were moved): a file's name in its directory is the
   * same, and a new one's may be known here alone (its create held back).
   */
  forgetDirs(): void;
  /**
   * "/a/b" for an inode, "" for the root. current: each directory's name read from the store again
   * (and kept), for when the cached ones may be of before a rename this disk has made; a file's own
   * name cached is this node's to know (its create may not be in the store yet).
   */
  pathOf(ino: number, current?: boolean): Promise<string>;
  /** The directory ino's name is in, as last read (undefined: not read, or forgotten). */
  parentOf(ino: number): number | undefined;
  /** Path of a name inside a directory. */
  childPath(parent: number, name: string): Promise<string>;
}

/** Names forgotten kept to compare with what is read again, up to this many. */
const FORGOTTEN_MAX = 65536;

export function createPathCache(store: MetadataStore): PathCache {
  type Name = { parent: number; name: string; dir: boolean };
  const names = new Map<number, Name>();
  /** Names forgotten: one read again the same is no news (a directory another node made files in is forgotten at each). */
  const forgotten = new Map<number, Name>();
  let dirNamesRead = 0;

  /** ino's name is n now: counted if it is new or changed. */
  function set(ino: number, n: Name): void {
    const had = names.get(ino) ?? forgotten.get(ino);
    forgotten.delete(ino);
    if (n.dir && (had?.parent !== n.parent || had.name !== n.name)) dirNamesRead++;
    names.set(ino, n);
  }

  function forget(ino: number): void {
    const had = names.get(ino);
    if (!had) return;
    names.delete(ino);
    if (forgotten.size >= FORGOTTEN_MAX) forgotten.clear();
    forgotten.set(ino, had);
  }

  async function pathOf(ino: number, current = false): Promise<string> {
    const parts: string[] = [];
    let cur = ino;
    for (let depth = 0; cur !== 1; depth++) {
      if (depth > 4096) throw Object.assign(new Error("ELOOP path too deep"), { code: "ELOOP" });
      let n = names.get(cur);
      if (current && (depth > 0 || n?.dir !== false)) n = undefined;
      if (!n) {
        const r = await store.get(cur);
        n = { parent: r.parent, name: r.name, dir: isDir(r.mode) };
        set(cur, n);
      }
      parts.push(n.name);
      cur = n.parent;
    }
    return parts.length ? "/" + parts.reverse().join("/") : "";
  }
  return {
    get dirNamesRead() {
      return dirNamesRead;
    },
    learn(r) {
      if (r.ino !== 1) set(r.ino, { parent: r.parent, name: r.name, dir: isDir(r.mode) });
    },
    forget,
    clear() {
      for (const ino of [...names.keys()]) forget(ino);
    },
    forgetDirs() {
      for (const [ino, n] of [...names]) if (n.dir) forget(ino);
    },
    pathOf,
    parentOf: (ino) => names.get(ino)?.parent,
    async childPath(parent, name) {
      return `${await pathOf(parent)}/${name}`;
    },
  };
}
