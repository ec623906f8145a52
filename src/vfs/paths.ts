import type { Inode, MetadataStore } from "../meta/store.ts";
import { isDir } from "./attr.ts";

/**
 * Namespace path of each inode, from its primary (parent, name), cached. The bytes of a file live at
 * that path under the node's root path, so paths are needed for every local data operation.
 */
export interface PathCache {
  /**
   * Directory names read from the store so far (fetched, or learned new or changed): a path of
   * names all read before some count was seen is of the namespace as it was then.
   */
  readonly dirNamesRead: number;
  learn(r: Inode): void;

  forget(ino: number): void;
  clear(): void;
  /**
   * "/a/b" for an inode, "" for the root. current: each name read from the store again (and kept),
   * for when the cached ones may be of before a rename this node's caches have not heard of yet.
   */
  pathOf(ino: number, current?: boolean): Promise<string>;
  /** Path of a name inside a directory. */
  childPath(parent: number, name: string): Promise<string>;
}

export function createPathCache(store: MetadataStore): PathCache {
  const names = new Map<number, { parent: number; name: string }>();
  let dirNamesRead = 0;
  async function pathOf(ino: number, current = false): Promise<string> {
    const parts: string[] = [];
    let cur = ino;
    for (let depth = 0; cur !== 1; depth++) {
      if (depth > 4096) throw Object.assign(new Error("ELOOP path too deep"), { code: "ELOOP" });
      let n = current ? undefined : names.get(cur);
      if (!n) {
        dirNamesRead++;
        const r = await store.get(cur);
        n = { parent: r.parent, name: r.name };
        names.set(cur, n);
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
      if (r.ino === 1) return;
      const had = names.get(r.ino);
      if (isDir(r.mode) && (had?.parent !== r.parent || had.name !== r.name)) dirNamesRead++;
      names.set(r.ino, { parent: r.parent, name: r.name });
    },
    forget(ino) {
      names.delete(ino);
    },

    clear() {
      names.clear();
    },
    pathOf,
    async childPath(parent, name) {
      return `${await pathOf(parent)}/${name}`;
    },
  };
}
