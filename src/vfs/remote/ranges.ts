import * as fs from "node:fs";
import { readCopy, type CopyCache, type CopyData } from "../../cache/copy-cache.ts";
import type { PeerReads } from "../../peer/peer-reads.ts";
import { E, FsError } from "../../util/errno.ts";
import type { Logger } from "../../util/log.ts";
import type { Arriving } from "./arriving.ts";

/** How far ahead of an arriving copy a read waits for it instead of asking the holder. */
const FOLLOW_WINDOW = 32 << 20;

export interface RangeReader {
  /** Up to size bytes at offset (fewer only at the end of the file). */
  read(offset: number, size: number): Promise<Uint8Array>;
  close(): void;
}

export interface RangesOptions {
  cache: CopyCache;
  peers: PeerReads;
  log: Logger;
  /** The copy of ino at version on its way into the cache, if one is. */
  arriving(ino: number, version: number): Arriving | undefined;
  received?: (bytes: number) => void;
}

/**
 * A big remote file read where it is: from its copy once cached (or as far as it has arrived), else
 * in ranges from its holders, moving to the next holder when one fails — never a short read.
 */
export function createRangeReader(o: RangesOptions, ino: number, version: number, path: string, size: number, order: string[]): RangeReader {
  let copy: CopyData | undefined;
  let at = 0;
  const reader: RangeReader = {
    async read(offset, want) {
      const end = Math.min(size, offset + want);
      const out = new Uint8Array(Math.max(0, end - offset));
      // From the copy when it holds these bytes already (whole, or arrived so far).
      copy ??= o.cache.open(ino, version);
      if (copy) {
        readCopy(copy, out, offset);
        return out;
      }
      const part = o.arriving(ino, version);
      if (part && part.got >= end) {
        part.sink.read(out, offset);
        return out;
      }
      // Just ahead of the copy (a sequential reader): wait for it rather than fetch the bytes twice.
      if (part && end <= part.got + FOLLOW_WINDOW) {
        await new Promise<void>((res) => part.waiters.push(res));
        return reader.read(offset, want);
      }
      let got = 0;
      while (offset + got < end) {
        let data: Uint8Array;
        // Reads run concurrently (kernel readahead): only the first to see a holder fail moves on.
        const tried = at;
        const holder = order[tried];
        if (holder === undefined) throw new FsError(E.EIO, `reading ${path}: no holder left`);
        try {
          data = await o.peers.range(holder, { ino, version, path }, offset + got, end - offset - got);
        } catch (e) {
          o.log.warn({ path, ino, holder, err: (e as Error).message }, "holder failed during a ranged read");
          if (at === tried) at++;
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
    },
  };
  return reader;
}
