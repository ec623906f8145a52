import * as fs from "node:fs";
import type { CopyCache, CopyData } from "../../cache/copy-cache.ts";
import { dupFd, readOnlyFd } from "../../cache/memfd.ts";
import type { FileSlice } from "../../fuse/types.ts";
import type { PeerReads } from "../../peer/peer-reads.ts";
import { E, FsError, errnoOf } from "../../util/errno.ts";
import type { Arriving } from "./arriving.ts";
import type { HolderWarnings } from "./holder-warnings.ts";
import { CHANGING_WAIT_MS } from "./changing-wait.ts";
import { PART, PARTS_AT_ONCE } from "./streams.ts";

/**
 * How far ahead of an arriving copy a read waits for it instead of asking the holder: the parts
 * fetched at once (streams.ts), so a reader following the copy waits rather than fetch bytes twice.
 */
const FOLLOW_WINDOW = PART * PARTS_AT_ONCE;
/**
 * How long a holder that refuses the bytes as changing (ESTALE) is asked again before the next one:
 * a writer's close there has returned before the kernel's release ends its write, and the bytes are
 * served once it has.
 */
const CHANGING_RETRY_MS = 1000;
/**
 * Past that, for a reader that has read nothing of the version yet (see RangeReader.read), while the
 * store still lists the holder with it (looked at this often): its writer has the file open.
 */
const LISTED_CHECK_MS = 500;

export interface RangeReader {
  /**
   * Up to size bytes at offset (fewer only at the end of the file); a slice of the copy where it has
   * them. untouched: its reader has read nothing of this version yet, so a holder whose writer has the
   * file open is waited for as an open waits (CHANGING_WAIT_MS), and may serve it as written; once it
   * has, such a holder is asked again for a second only: bytes read before its writer began are never
   * joined by bytes written since.
   */
  read(offset: number, size: number, untouched?: boolean): Promise<Uint8Array | FileSlice>;
  /**
   * listen hears of the copy of this file once this node has one, arriving or whole: a read-only fd
   * of it and how many bytes from its start are there, again as more arrive (whole: all of them).
   * Until close.
   */
  follow(listen: (fd: number, bytes: number, whole: boolean) => void): void;
  close(): void;
}

export interface RangesOptions {
  cache: CopyCache;
  peers: PeerReads;
  /** Holders' failures to the log. */
  warn: HolderWarnings;
  /** The copy of ino at version on its way into the cache, if one is. */
  arriving(ino: number, version: number): Arriving | undefined;
  received?: (bytes: number) => void;
}

/**
 * Bytes of a copy, sent from its pages by the FUSE binding, which checks that the copy holds them
 * all (else EIO) and closes the descriptor: a dup, so the copy may close its own meanwhile.
 */
function slice(fd: number, offset: number, end: number): FileSlice {
  return { fd: dupFd(fd), offset, length: end - offset };
}

/**
 * A big remote file read where it is: from its copy once cached (or as far as it has arrived), else
 * in ranges from its holders, moving to the next holder when one fails — never a short read. more:
 * the holders as the store lists them now, asked once the ones known fail (a copy listed since the
 * open, the reader's best hope once the holder it read from is gone).
 */
export function createRangeReader(o: RangesOptions, ino: number, version: number, path: string, size: number, order: string[], more: () => Promise<string[]>): RangeReader {
  let copy: CopyData | undefined;
  let at = 0;
  /** Holders the store listed after the known ones failed: each reader asks once, the concurrent ones share it. */
  let asked: Promise<void> | undefined;
  const askMore = () =>
    (asked ??= more().then(
      (listed) => void order.push(...listed.filter((h) => !order.includes(h))),
      () => {},
    ));
  let listed: { at: number; holders: Promise<string[]> } | undefined;
  const stillListed = async (holder: string) => {
    if (!listed || Date.now() - listed.at >= LISTED_CHECK_MS) listed = { at: Date.now(), holders: more().catch(() => []) };
    return (await listed.holders).includes(holder);
  };
  let listen: ((fd: number, bytes: number, whole: boolean) => void) | undefined;
  let followed: number | undefined;
  /** Hands listen the copy when there is one: started after the open that made this reader, so looked for again at each read. */
  const track = () => {
    if (!listen || followed !== undefined) return;
    const whole = o.cache.open(ino, version);
    if (whole) {
      followed = whole.fd;
      return listen(followed, size, true);
    }
    const part = o.arriving(ino, version);
    if (!part) return;
    followed = readOnlyFd(part.sink.fd);
    const tell = () => {
      if (!listen || followed === undefined) return;
      listen(followed, part.got, part.got >= size);
      // Aborted part way, the bytes that came stay good: they are this version's.
      if (o.arriving(ino, version) === part && part.got < size) part.waiters.push(tell);
    };
    tell();
  };
  const reader: RangeReader = {
    follow(l) {
      listen = l;
      track();
    },
    async read(offset, want, untouched = false) {
      track();
      const end = Math.min(size, offset + want);
      if (end <= offset) return new Uint8Array(0);
      // From the copy when it holds these bytes already (whole, or arrived so far).
      copy ??= o.cache.open(ino, version);
      if (copy) return slice(copy.fd, offset, end);
      const part = o.arriving(ino, version);
      if (part && part.got >= end) return slice(part.sink.fd, offset, end);
      // Just ahead of the copy (a sequential reader): wait for it rather than fetch the bytes twice.
      if (part && end <= part.got + FOLLOW_WINDOW) {
        await new Promise<void>((res) => part.waiters.push(res));
        return reader.read(offset, want, untouched);
      }
      // Not zeroed: every byte is filled below, or the read fails.
      const out = Buffer.allocUnsafe(end - offset);
      let got = 0;
      let waited = 0;
      let pause = 2;
      while (offset + got < end) {
        let data: Uint8Array;
        // Reads run concurrently (kernel readahead): only the first to see a holder fail moves on.
        const tried = at;
        const holder = order[tried];
        if (holder === undefined) throw new FsError(E.EIO, `reading ${path}: no holder left`);
        try {
          data = await o.peers.range(holder, { ino, version, path }, offset + got, end - offset - got);
        } catch (e) {
          if (errnoOf(e) === E.ESTALE && (waited < CHANGING_RETRY_MS || (untouched && waited < CHANGING_WAIT_MS && (await stillListed(holder))))) {
            await Bun.sleep(pause);
            waited += pause;
            pause = Math.min(2 * pause, 100);
            continue;
          }
          o.warn({ path, ino, holder }, e, "holder failed during a ranged read");
          if (at === tried) at++;
          if (at >= order.length) await askMore();
          if (at >= order.length) throw new FsError(E.EIO, `reading ${path}: ${(e as Error).message}`);
          continue;
        }
        if (data.length === 0) throw new FsError(E.EIO, `holder of ${path} has fewer bytes than its record`);
        o.received?.(data.length);
        out.set(data, got);
        got += data.length;
      }
      return out;
    },
    close() {
      if (copy && "fd" in copy) fs.closeSync(copy.fd);
      copy = undefined;
      listen = undefined;
      if (followed !== undefined) fs.closeSync(followed);
      followed = undefined;
    },
  };
  return reader;
}
