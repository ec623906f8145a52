import * as fs from "node:fs";
import type { LocalDir } from "../local/local-dir.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import type { Logger } from "../util/log.ts";

/**
 * Bytes of files whose last name went, kept a while for other nodes that still read them through an
 * open descriptor (POSIX: an unlinked file stays readable while open). Only files read here in
 * ranges lately are kept: every other remote reader took its whole copy at open, or holds an open
 * stream. Kept under .mcfs/unlinked as <ino>.<version>, dropped once unread for keepMs, and all at start.
 */
export interface RetiredFiles {
  /** A ranged read of ino was served: its bytes may be wanted after its last name goes. */
  rangeRead(ino: number): void;
  /** The last name of ino (held here at version) goes: true when its file was kept (moved aside). */
  retire(path: string, ino: number, version: number): boolean;
  /** Whether the last name of ino going would keep its bytes (it was read in ranges lately). */
  wouldKeep(ino: number): boolean;
  /** A read-only fd on the kept bytes of ino at version, if kept. */
  open(ino: number, version: number): number | undefined;
  close(): void;
}

const DIR = `/${RESERVED_NAME}/unlinked`;
/** Inodes remembered as read in ranges (the oldest forgotten first). */
const RANGED_MAX = 10_000;

export function createRetiredFiles(o: { root: LocalDir; keepMs: number; log: Logger }): RetiredFiles {
  const { root } = o;
  root.remove(DIR);
  /** When each inode was last read in ranges. */
  const ranged = new Map<number, number>();
  const wouldKeep = (ino: number) => (ranged.get(ino) ?? 0) >= Date.now() - o.keepMs;
  /** Kept files by "ino.version": when last read. */
  const kept = new Map<string, number>();
  const sweep = setInterval(() => {
    const old = Date.now() - o.keepMs;
    for (const [ino, at] of ranged) if (at < old) ranged.delete(ino);
    for (const [key, at] of kept) {
      if (at >= old) continue;
      kept.delete(key);
      root.remove(`${DIR}/${key}`);
    }
  }, Math.max(1000, o.keepMs / 4));
  sweep.unref();

  return {
    rangeRead(ino) {
      ranged.delete(ino);
      ranged.set(ino, Date.now());
      if (ranged.size > RANGED_MAX) ranged.delete(ranged.keys().next().value!);
    },
    wouldKeep,
    retire(path, ino, version) {
      if (!wouldKeep(ino)) return false;
      try {
        root.ensureDir(DIR);
        root.rename(path, `${DIR}/${ino}.${version}`);
      } catch (e) {
        o.log.warn({ path, ino, err: (e as Error).message }, "could not keep an unlinked file for its readers elsewhere");
        return false;
      }
      kept.set(`${ino}.${version}`, Date.now());
      o.log.info({ path, ino }, "unlinked while read in ranges elsewhere: its bytes are kept for those readers a while");
      return true;
    },
    open(ino, version) {
      const key = `${ino}.${version}`;
      if (!kept.has(key)) return undefined;
      kept.set(key, Date.now());
      return root.openFile(`${DIR}/${key}`, fs.constants.O_RDONLY);
    },
    close() {
      clearInterval(sweep);
    },
  };
}
