import * as fs from "node:fs";
import type { ShimCreates, ShimKit } from "../fuse/types.ts";
import type { LocalDir } from "../local/local-dir.ts";
import { fileIdentity, newGeneration, type Inode } from "../meta/store.ts";
import type { Logger } from "../util/log.ts";
import type { InodeNumbers } from "./inode-numbers.ts";
import type { OpenFiles } from "./open-files.ts";

/** Kits the shim holds: topped up by BATCH once below LOW. */
const LOW = 256;
const BATCH = 256;
/** Directories the shim makes files in at once (each an open fd): past this, the least used goes back to JS. */
const MAX_DIRS = 256;

/**
 * What a node hands the FUSE shim so that it makes new files itself (ShimCreates): kits (an inode
 * number, a handle, an identity) kept topped up, and the local directory of each directory this
 * node has made a file in (on a sole node, of each listed one). Files the shim made are taken in by
 * file-ops' created.
 */
export interface ShimKits {
  /** The generation of the kit of ino, which the shim used in dir (forgotten here). */
  take(ino: number, dir: number): string | undefined;
  /**
   * A file was made in directory d through JS (its name, open as fd; its directory's local path:
   * dirPath): the shim may make the next ones there.
   */
  madeIn(d: Inode, dirPath: string, name: string, fd: number): void;
  /** A directory's record changed: its mode and group go to the shim again. */
  learned(d: Inode): void;
  /** dir's listing in the shim went or was replaced, and its local directory with it. */
  unlisted(dir: number): void;
  unlistedAll(): void;
}

export interface ShimKitsOptions {
  creates: ShimCreates;
  inos: InodeNumbers;
  open: OpenFiles;
  root: LocalDir;
  log: Logger;
}

export function createShimKits(o: ShimKitsOptions): ShimKits {
  const gens = new Map<number, string>();
  /** Directories whose local directory the shim has, with the mode and group it was told. */
  const handed = new Map<number, { mode: number; gid: number }>();
  let held = 0;
  let filling = false;

  async function refill(): Promise<void> {
    if (filling || held >= LOW) return;
    filling = true;
    try {
      const kits: ShimKit[] = [];
      for (let i = 0; i < BATCH; i++) {
        const ino = await o.inos.next();
        const gen = newGeneration();
        gens.set(ino, gen);
        kits.push({ ino, fh: o.open.reserveFh(), mark: fileIdentity(ino, gen) });
      }
      held = o.creates.supply(kits);
    } catch (e) {
      // The shim's creates go to JS meanwhile; the next create made there tries again.
      o.log.warn({ op: "create", err: (e as Error).message }, "could not hand the shim inode numbers for new files");
    } finally {
      filling = false;
    }
  }

  return {
    take(ino, dir) {
      const gen = gens.get(ino);
      gens.delete(ino);
      held--;
      void refill();
      // Used lately: the last to go back to JS.
      const h = handed.get(dir);
      if (h) {
        handed.delete(dir);
        handed.set(dir, h);
      }
      return gen;
    },
    madeIn(d, dirPath, name, fd) {
      void refill();
      if (handed.has(d.ino)) return;
      let dirFd: number;
      try {
        dirFd = o.root.open(dirPath, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
      } catch (e) {
        o.log.warn({ op: "create", path: dirPath, err: (e as Error).message }, "could not open a directory for the shim to make files in");
        return;
      }
      // Refused (fd closed) when a sole node's shim has no whole listing of it, or the directory was
      // renamed since its path was read (dirFd another one): tried again at the next create here.
      if (!o.creates.makeHere(d.ino, dirFd, d.mode, d.gid, { name, fd })) return;
      handed.set(d.ino, { mode: d.mode, gid: d.gid });
      if (handed.size > MAX_DIRS) {
        const [oldest] = handed.keys();
        handed.delete(oldest!);
        o.creates.elsewhere(oldest!);
      }
    },
    learned(d) {
      const had = handed.get(d.ino);
      if (!had || (had.mode === d.mode && had.gid === d.gid)) return;
      handed.set(d.ino, { mode: d.mode, gid: d.gid });
      o.creates.makeHere(d.ino, -1, d.mode, d.gid);
    },
    unlisted: (dir) => void handed.delete(dir),
    unlistedAll: () => handed.clear(),
  };
}
