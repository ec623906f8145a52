import { E, FsError, toErrno } from "../../util/errno.ts";

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
  sink: { write(data: Uint8Array, at: number): void | Promise<void>; read(into: Uint8Array, at: number): number };
  got: number;
  waiters: (() => void)[];
}

/**
 * Writes into an arriving copy, one after another: readers following the copy trust progress.got
 * to cover only bytes written. onWritten hears each write land. Each call's promise settles with it.
 */
export function inOrder(progress: Arriving, onWritten?: (bytes: number) => void): (d: Uint8Array, at: number) => Promise<void> {
  let chain: Promise<void> = Promise.resolve();
  return (d, at) =>
    (chain = chain.then(async () => {
      try {
        await progress.sink.write(d, at);
      } catch (e) {
        throw new LocalWriteError(toErrno(e), `writing the arriving copy: ${(e as Error).message}`);
      }
      onWritten?.(d.length);
      progress.got = at + d.length;
      for (const w of progress.waiters.splice(0)) w();
    }));
}
