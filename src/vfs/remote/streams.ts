import type { Holders } from "../../meta/store.ts";
import type { PeerReads } from "../../peer/peer-reads.ts";
import { E, FsError } from "../../util/errno.ts";
import type { Logger } from "../../util/log.ts";
import { ChangingCopy, LocalWriteError, inOrder, type Arriving } from "./arriving.ts";
import type { Sources } from "./sources.ts";

/** Bytes received but not yet written to a copy on disk. */
const WRITE_BEHIND = 16 << 20;
/** Copies from this size on are logged with the speed they came at. */
const LOG_FROM = 64 << 20;

/** Whole files streamed from one holder, or the next when one fails. */
export interface Streams {
  /** Stream ino at version into progress from the first holder that has it whole. */
  fetchAny(ino: number, version: number, path: string, size: number, progress: Arriving, given?: Holders): Promise<void>;
}

export function createStreams(o: { peers: PeerReads; sources: Sources; log: Logger; received?: (bytes: number) => void }): Streams {
  /** Stream the file from one holder; the byte count must match the record's size. */
  async function fetchFrom(address: string, ino: number, version: number, path: string, size: number, progress: Arriving): Promise<void> {
    let got = 0;
    progress.got = 0;
    // Disk writes run behind the stream, off the event loop: receiving and writing overlap.
    let behind = 0;
    const write = inOrder(progress, (n) => (behind -= n));
    let written: Promise<void> = Promise.resolve();
    try {
      for await (const ch of o.peers.file(address, { ino, version, path })) {
        if (ch.offset !== got) throw new FsError(E.EIO, `holder ${address} sent bytes out of order`);
        if (got + ch.data.length > size) throw new ChangingCopy(`holder ${address} has more than the ${size} bytes of ${path}`);
        const at = got, data = ch.data;
        got += data.length;
        behind += data.length;
        o.received?.(data.length);
        written = write(data, at);
        // Bounded: past this the stream waits (and HTTP/2 flow control holds the sender).
        if (behind > WRITE_BEHIND) await written;
      }
      await written;
    } catch (e) {
      await written.catch(() => {});
      throw e;
    }
    // A short copy is never served: a holder that lost bytes is as good as down.
    if (got !== size) throw new ChangingCopy(`holder ${address} has ${got} of ${size} bytes of ${path}`);
  }

  return {
    async fetchAny(ino, version, path, size, progress, given) {
      const errors: string[] = [];
      let changing = false;
      for (const fresh of given ? [false, true] : [true]) {
        if (fresh) o.sources.refresh();
        for (const { address } of await o.sources.of(ino, version, fresh ? undefined : given)) {
          try {
            const t0 = performance.now();
            await fetchFrom(address, ino, version, path, size, progress);
            if (size >= LOG_FROM) {
              const seconds = (performance.now() - t0) / 1000;
              o.log.info({ path, ino, holder: address, mib: Math.round(size / 2 ** 20), seconds: +seconds.toFixed(2), mbPerSecond: Math.round(size / 1e6 / seconds) }, "copied a big file from its holder");
            }
            return;
          } catch (e) {
            if (e instanceof LocalWriteError) throw e;
            errors.push(`${address}: ${(e as Error).message}`);
            changing ||= e instanceof ChangingCopy || (e instanceof FsError && e.errno === E.ESTALE);
            o.log.warn({ path, ino, holder: address, err: (e as Error).message }, "holder failed, trying the next one");
          }
        }
      }
      const msg = `no reachable node holds ${path} at version ${version}${errors.length ? ` (${errors.join("; ")})` : ""}`;
      throw changing ? new ChangingCopy(msg) : new FsError(E.EIO, msg);
    },
  };
}
