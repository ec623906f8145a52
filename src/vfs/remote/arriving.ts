import { E, FsError, toErrno } from "../../util/errno.ts";
import { byteLength, type Pieces } from "../../util/bytes.ts";

/**
 * No holder could give the version asked for whole, but some answered: they no longer hold it, or
 * hold more or fewer bytes than its record says (a write in progress there). A newer version, or the
 * writer's close, will do.
 */
export class ChangingCopy extends FsError {
  constructor(message: string) {
    super(E.EIO, message);
  }
}

/**
 * Writing an arriving copy to this node's own disk failed (ENOSPC, EIO of the disk): no other holder
 * would do better, and the caller gets that errno, not the EIO of an unreachable holder.
 */
export class LocalWriteError extends FsError {}

/** A copy being fetched: where its bytes go, how many arrived so far, and readers waiting for more. */
export interface Arriving {
  /**
   * fd: where the bytes are written; read it only below got. landed: bytes written there by the
   * file threads through a descriptor of their own (where given, the bytes may come so).
   */
  sink: { write(data: Pieces, at: number): void | Promise<void>; fd: number; landed?(at: number, n: number): void };
  got: number;
  waiters: (() => void)[];
}

/** Writes into an arriving copy (see anyOrder); landed, where the sink takes bytes written by the file threads. */
export interface CopyWriter {
  write(d: Pieces, at: number): Promise<void>;
  landed?(at: number, n: number): void;
}

/**
 * Writes into an arriving copy, one after another: readers following the copy trust progress.got
 * to cover only bytes written. onWritten hears each write land. Each call's promise settles with it.
 */
export function inOrder(progress: Arriving, onWritten?: (bytes: number) => void): (d: Pieces, at: number) => Promise<void> {
  let chain: Promise<void> = Promise.resolve();
  return (d, at) =>
    (chain = chain.then(async () => {
      try {
        await progress.sink.write(d, at);
      } catch (e) {
        throw new LocalWriteError(toErrno(e), `writing the arriving copy: ${(e as Error).message}`);
      }
      const n = byteLength(d);
      onWritten?.(n);
      progress.got = at + n;
      for (const w of progress.waiters.splice(0)) w();
    }));
}

/**
 * Writes into an arriving copy in any order (parts fetched at once): progress.got moves only over
 * bytes written, from 0 without a gap, so readers following the copy never read a byte still on its
 * way. Pieces landed past a gap wait in a map by where they start. A piece written again (a part
 * fetched anew from another holder: the same version, so the same bytes) is taken as it comes.
 */
export function anyOrder(progress: Arriving, onWritten?: (bytes: number) => void): CopyWriter {
  const ahead = new Map<number, number>();
  const advance = (at: number, end: number) => {
    onWritten?.(end - at);
    if (end <= progress.got) return;
    const from = Math.max(at, progress.got);
    ahead.set(from, Math.max(end, ahead.get(from) ?? 0));
    const was = progress.got;
    for (let e; (e = ahead.get(progress.got)) !== undefined; ) {
      ahead.delete(progress.got);
      progress.got = Math.max(progress.got, e);
    }
    if (progress.got > was) for (const w of progress.waiters.splice(0)) w();
  };
  const { sink } = progress;
  return {
    async write(d, at) {
      try {
        await sink.write(d, at);
      } catch (e) {
        throw new LocalWriteError(toErrno(e), `writing the arriving copy: ${(e as Error).message}`);
      }
      advance(at, at + byteLength(d));
    },
    ...(sink.landed
      ? {
          landed(at: number, n: number) {
            try {
              sink.landed!(at, n);
            } catch (e) {
              throw new LocalWriteError(toErrno(e), `taking in the arriving copy: ${(e as Error).message}`);
            }
            advance(at, at + n);
          },
        }
      : {}),
  };
}
