import type { DirEntry, FileSystem } from "../fuse/types.ts";
import { S_IFDIR } from "./attr.ts";
import type { VfsContext } from "./context.ts";
import { compareNames } from "./name-order.ts";

type DirOps = Pick<FileSystem, "opendir" | "readdir" | "releasedir">;

/**
 * Directory listings: read whole at opendir, in natural order of names (the order read-ahead fetches
 * a directory's files in, so that a program reading them as listed finds them fetched ahead), served
 * in slices; readdirplus tells the kernel each entry's attributes.
 */
export function createDirOps(ctx: VfsContext): DirOps {
  const { store, kernel } = ctx;
  return {
    async opendir(_c, ino) {
      // Listed by readdirplus, its names are never looked up: the listing that lets reads of its
      // small files fetch their siblings along would not load, nor learn the inodes of other nodes' new names, otherwise.
      const list = [...(await ctx.cache.readListing(ino))].sort((a, b) => compareNames(a.name, b.name));
      const r = ctx.learn(await store.get(ino));
      return ctx.open.addDir({ entries: [{ name: ".", ino, type: S_IFDIR >> 12 }, { name: "..", ino: r.parent || 1, type: S_IFDIR >> 12 }, ...list] });
    },

    async readdir(_c, ino, fh, offset, max, plus) {
      const d = ctx.open.dir(fh);
      const slice = d.entries.slice(offset, offset + max);
      const out: DirEntry[] = [];
      if (!plus) {
        slice.forEach((e, i) => out.push({ name: e.name, next: offset + i + 1, attr: { ino: e.ino, mode: e.type << 12, nlink: 1, uid: 0, gid: 0, rdev: 0, size: 0, atime: 0n, mtime: 0n, ctime: 0n } }));
        return out;
      }
      const recs = await store.getMany(slice.map((e) => e.ino));
      slice.forEach((e, i) => {
        const r = recs[i];
        if (r) out.push({ name: e.name, next: offset + i + 1, attr: kernel.told(ino, e.name, ctx.learn(r)) });
      });
      return out;
    },

    async releasedir(_c, _ino, fh) {
      ctx.open.removeDir(fh);
    },
  };
}
