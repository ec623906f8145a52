import type { DirEntry, FileSystem } from "../fuse/types.ts";
import type { Inode } from "../meta/store.ts";
import { S_IFDIR } from "./attr.ts";
import type { VfsContext } from "./context.ts";
import type { DirHandle } from "./open-files.ts";
import { compareNames } from "./name-order.ts";
import { E, errnoOf } from "../util/errno.ts";

type DirOps = Pick<FileSystem, "opendir" | "readdir" | "releasedir">;

/**
 * Directory listings: read whole at opendir, in natural order of names (the order read-ahead fetches
 * a directory's files in, so that a program reading them as listed finds them fetched ahead), served
 * in slices; readdirplus tells the kernel each entry's attributes.
 *
 * The kernel keeps each name readdirplus gives it, as a lookup's answer: a name the directory lost
 * since opendir (renamed, removed; here, or heard from another node) is left out, since under it the
 * next create would open, and truncate, the file that moved away; a name that leads to another file
 * now is given that file. POSIX leaves open whether such names are listed at all.
 */
export function createDirOps(ctx: VfsContext): DirOps {
  const { store, kernel } = ctx;

  /** The directory's listing now, with . and ..: it has the changes heard before (those heard while it is read are kept). */
  async function load(d: DirHandle): Promise<void> {
    d.changed.clear();
    // Listed by readdirplus, its names are never looked up: the listing that lets reads of its
    // small files fetch their siblings along would not load, nor learn the inodes of other nodes' new names, otherwise.
    const list = [...(await ctx.cache.readListing(d.ino))].sort((a, b) => compareNames(a.name, b.name));
    const r = ctx.learn(await store.get(d.ino));
    d.rec = r;
    d.entries = [{ name: ".", ino: d.ino, type: S_IFDIR >> 12 }, { name: "..", ino: r.parent || 1, type: S_IFDIR >> 12 }, ...list];
  }

  return {
    async opendir(_c, ino) {
      // Open before the listing is read, so that it hears the changes made meanwhile (one the
      // listing has already is heard harmlessly).
      const d: DirHandle = { ino, entries: [], changed: new Map() };
      const fh = ctx.open.addDir(d);
      try {
        // Gone on another node since the kernel looked it up (a directory renamed over it): ESTALE (ctx.onInode).
        await ctx.onInode(ino, () => load(d));
        return fh;
      } catch (e) {
        ctx.open.removeDir(fh);
        throw e;
      }
    },

    async readdir(_c, ino, fh, offset, max, plus) {
      const d = ctx.open.dir(fh);
      // Read again from its start (rewinddir, or a seek to 0): POSIX has it list what is there now.
      if (offset === 0 && d.served) await load(d);
      d.served = true;
      const out: DirEntry[] = [];
      if (!plus) {
        d.entries.slice(offset, offset + max).forEach((e, i) => out.push({ name: e.name, next: offset + i + 1, attr: { ino: e.ino, mode: e.type << 12, nlink: 1, uid: 0, gid: 0, rdev: 0, size: 0, atime: 0n, mtime: 0n, ctime: 0n } }));
        return out;
      }
      // A name that came or went since opendir is looked up again: lost since, it is left out; now
      // another file's, it is given that file.
      const changes = (name: string) => d.changed.get(name) ?? 0;
      const inoNow = async (e: DirHandle["entries"][number]): Promise<number | undefined> => {
        if (!changes(e.name)) return e.ino;
        try {
          return (await store.lookup(d.ino, e.name)).ino;
        } catch (err) {
          if (errnoOf(err) === E.ENOENT) return undefined;
          throw err;
        }
      };
      // An empty answer ends the listing for the kernel: a slice left with nothing goes on to the next.
      for (let at = offset; !out.length && at < d.entries.length; at += max) {
        const part = d.entries.slice(at, at + max);
        const seen: number[] = [];
        const now: (number | undefined)[] = [];
        const resolve = async (k: number) => {
          seen[k] = changes(part[k]!.name);
          now[k] = await inoNow(part[k]!);
        };
        await Promise.all(part.map((_, k) => resolve(k)));
        for (let pass = 0; ; pass++) {
          // Records held fresh (a lookup would answer from them too: the listing's prefetch) are not
          // read again; one dropped while the others were read (a change heard) is read after all, and
          // after a third round of that, every one is.
          const held = now.map((i) => (i === undefined ? undefined : ctx.cache.fresh(i)));
          const got = new Map<number, Inode>();
          for (let round = 0; ; round++) {
            const want = now.filter((i, k): i is number => i !== undefined && !held[k] && !got.has(i));
            if (!want.length) break;
            (await store.getMany(want)).forEach((r, k) => r && got.set(want[k]!, r));
            let dropped = false;
            now.forEach((i, k) => {
              if (i !== undefined && held[k] && (round === 2 || ctx.cache.fresh(i) !== held[k])) (held[k] = undefined), (dropped = true);
            });
            if (!dropped) break;
          }
          // A name heard of while it was looked up or its record read is looked up again (a message
          // of a change the listing has already, most often); after a third time, left out.
          const moved = part.flatMap((e, k) => (changes(e.name) !== seen[k] ? [k] : []));
          if (moved.length && pass < 2) {
            await Promise.all(moved.map(resolve));
            continue;
          }
          part.forEach((e, i) => {
            const child = now[i];
            const r = child === undefined ? undefined : (held[i] ?? got.get(child));
            if (!r || changes(e.name) !== seen[i]) return;
            out.push({ name: e.name, next: at + i + 1, attr: kernel.answering(ino, e.name, held[i] ? r : ctx.learn(r)) });
          });
          break;
        }
      }
      return out;
    },

    async releasedir(_c, _ino, fh) {
      ctx.open.removeDir(fh);
    },
  };
}
