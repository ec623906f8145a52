import type { Holders } from "../../meta/store.ts";
import type { FileAt, PeerReads } from "../../peer/peer-reads.ts";
import { E, FsError } from "../../util/errno.ts";
import { byteLength, type Pieces } from "../../util/bytes.ts";
import type { Logger } from "../../util/log.ts";
import { ChangingCopy, LocalWriteError, anyOrder, type Arriving, type CopyWriter } from "./arriving.ts";
import { BulkSinkError } from "../../peer/bulk-client.ts";
import { THREADED_MIN } from "../../peer/bulk-protocol.ts";
import { dupFd } from "../../cache/memfd.ts";
import * as fs from "node:fs";
import type { Source, Sources } from "./sources.ts";
import type { HolderWarnings } from "./holder-warnings.ts";

/**
 * A file comes in parts of this size, this many at once, each part one stream over its own
 * connection to the holder (a lane): one connection carried ~250 MB/s here, four ~500. The parts
 * being fetched are the next ones after what arrived, so a reader following the copy from its start
 * waits for at most this many parts (see FOLLOW_WINDOW in ranges.ts).
 */
export const PART = 8 << 20;
export const PARTS_AT_ONCE = 4;
/** Bytes of one stream received but not yet written to the copy. */
const WRITE_BEHIND = 8 << 20;
/** Copies from this size on are logged with the speed they came at. */
const LOG_FROM = 64 << 20;

/** Whole files fetched from their holders, moving to the next holder when one fails. */
export interface Streams {
  /**
   * Fetch ino at version into progress from the holders that have it whole (given: asked first).
   * holes: the holders' holes are not sent, and stay holes here (progress then counts no further than
   * the first one: for a copy no reader follows as it arrives). ahead: nobody asked for it yet (a
   * read-ahead), so a holder's failure is logged at debug: one that loses a race with a rewrite is
   * not an operator's concern until a reader's fetch fails.
   */
  fetchAny(ino: number, version: number, path: string, size: number, progress: Arriving, how?: { given?: Holders | undefined; holes?: boolean; ahead?: boolean }): Promise<void>;
}

/** A part of the file: its bytes from offset, up to the next part (or, for the last, to the end of the file). */
interface Part {
  offset: number;
  length: number;
  last: boolean;
}

/** Why holders failed: ChangingCopy at the end if any answered that its bytes are not those of the version. */
interface Failures {
  messages: string[];
  changing: boolean;
}

export function createStreams(o: { peers: PeerReads; sources: Sources; log: Logger; warn: HolderWarnings; received?: (bytes: number) => void }): Streams {
  /** One part from one holder: exactly its bytes, and for the last one, nothing past the record's size. */
  async function fetchPart(address: string, f: FileAt, size: number, part: Part, lane: number, to: CopyWriter, sinkFd: number, signal: AbortSignal, holes: boolean): Promise<void> {
    let at = part.offset;
    const end = part.offset + part.length;
    const range = { offset: part.offset, lane, signal, holes, ...(part.last ? {} : { length: part.length }) };
    // Written by the file threads where the holder and the copy allow: no byte through the JS thread.
    if (to.landed && !holes && part.length >= THREADED_MIN) {
      const landed = to.landed;
      // Its own: the copy's may be closed (aborted by another part's failure) while a frame is written.
      const own = dupFd(sinkFd);
      try {
        const sink = {
          fd: own,
          landed(from: number, n: number) {
            if (from !== at) throw new FsError(E.EIO, `holder ${address} sent bytes out of order`);
            at += n;
            o.received?.(n);
            landed(from, n);
          },
        };
        if (await o.peers.fileInto(address, f, range, part.length, sink)) {
          if (at !== end) throw new ChangingCopy(`holder ${address} has ${at} of ${size} bytes of ${f.path}`);
          return;
        }
      } catch (e) {
        if (e instanceof BulkSinkError) throw new LocalWriteError(e.errno, e.message);
        throw e;
      } finally {
        fs.closeSync(own);
      }
    }
    // Disk writes run behind the stream, off the event loop: receiving and writing overlap.
    let behind = 0;
    const writes: Promise<void>[] = [];
    try {
      for await (const ch of o.peers.file(address, f, range)) {
        // Skipping holes, the chunks may leave gaps (and the last, empty, marks the end).
        if (holes ? ch.offset < at : ch.offset !== at) throw new FsError(E.EIO, `holder ${address} sent bytes out of order`);
        const n = byteLength(ch.data);
        if (ch.offset + n > end) throw new ChangingCopy(`holder ${address} has more than the ${size} bytes of ${f.path}`);
        at = ch.offset;
        if (!n) continue;
        at += n;
        behind += n;
        o.received?.(n);
        const w = to.write(ch.data, ch.offset);
        w.then(() => void (behind -= n), () => {});
        writes.push(w);
        // Bounded: past this the stream waits (and HTTP/2 flow control holds the sender).
        while (behind > WRITE_BEHIND) await writes.shift();
      }
      for (const w of writes) await w;
    } finally {
      // Every write settles before the part ends, either way: the copy may be closed right after.
      await Promise.allSettled(writes);
    }
    // A short copy is never served: a holder that lost bytes is as good as down.
    if (at !== end) throw new ChangingCopy(`holder ${address} has ${at} of ${size} bytes of ${f.path}`);
  }

  /**
   * Parts of the file from the holders in order, PARTS_AT_ONCE at a time: a part whose holder fails
   * is fetched again from the next one (same version, same bytes); the parts left when no holder is
   * left are returned. A failed write to this node's disk stops them all and is thrown.
   */
  async function fetchParts(holders: Source[], f: FileAt, size: number, todo: Part[], to: CopyWriter, sinkFd: number, failures: Failures, holes: boolean, ahead: boolean): Promise<Part[]> {
    const stop = new AbortController();
    let at = 0;
    let fatal: unknown;
    const left: Part[] = [];
    const worker = async (lane: number) => {
      for (let part; (part = todo.shift()); ) {
        for (;;) {
          const tried = at;
          const src = holders[tried];
          if (src === undefined || fatal !== undefined) {
            left.push(part);
            break;
          }
          try {
            await fetchPart(src.address, f, size, part, lane, to, sinkFd, stop.signal, holes);
            break;
          } catch (e) {
            if (e instanceof LocalWriteError) {
              fatal ??= e;
              stop.abort();
              continue;
            }
            if (stop.signal.aborted) continue;
            // Parts run at once: only the first to see a holder fail moves on.
            if (at === tried) {
              at++;
              failures.messages.push(`${src.address}: ${(e as Error).message}`);
              // ENOENT: no file of it at the path the holder was told, its disk still following renames.
              failures.changing ||= e instanceof ChangingCopy || (e instanceof FsError && (e.errno === E.ESTALE || e.errno === E.ENOENT));
              if (ahead) o.log.debug({ path: f.path, ino: f.ino, holder: src.address, err: (e as Error).message }, "holder failed a fetch ahead, trying the next one");
              else o.warn({ path: f.path, ino: f.ino, holder: src.address }, e, "holder failed, trying the next one");
            }
          }
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(PARTS_AT_ONCE, todo.length) }, (_, lane) => worker(lane)));
    if (fatal !== undefined) throw fatal;
    return left.sort((a, b) => a.offset - b.offset);
  }

  return {
    async fetchAny(ino, version, path, size, progress, { given, holes = false, ahead = false } = {}) {
      const f = { ino, version, path };
      progress.got = 0;
      const write = anyOrder(progress);
      let todo: Part[] = [];
      // Skipping holes, one stream: parts of a sparse file of petabytes would be billions of calls,
      // each for nothing, where the holder finds the data runs of the whole file at once.
      if (holes) todo.push({ offset: 0, length: size, last: true });
      else for (let offset = 0; offset === 0 || offset < size; offset += PART) todo.push({ offset, length: Math.min(PART, size - offset), last: offset + PART >= size });
      const failures: Failures = { messages: [], changing: false };
      const t0 = performance.now();
      for (const fresh of given ? [false, true] : [true]) {
        if (fresh) o.sources.refresh();
        todo = await fetchParts(await o.sources.of(ino, version, fresh ? undefined : given), f, size, todo, write, progress.sink.fd, failures, holes, ahead);
        if (todo.length) continue;
        if (size >= LOG_FROM) {
          const seconds = (performance.now() - t0) / 1000;
          o.log.info({ path, ino, mib: Math.round(size / 2 ** 20), seconds: +seconds.toFixed(2), mbPerSecond: Math.round(size / 1e6 / seconds) }, "copied a big file from its holders");
        }
        return;
      }
      const msg = `no reachable node holds ${path} at version ${version}${failures.messages.length ? ` (${failures.messages.join("; ")})` : ""}`;
      throw failures.changing ? new ChangingCopy(msg) : new FsError(E.EIO, msg);
    },
  };
}
