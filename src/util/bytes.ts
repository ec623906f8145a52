import * as fs from "node:fs";
import { E, FsError } from "./errno.ts";

/** Bytes of data held in pieces, in order: how the copies of other nodes' files arrive. */
export type Pieces = readonly Uint8Array[];

export function byteLength(p: Pieces): number {
  let n = 0;
  for (const x of p) n += x.length;
  return n;
}

const ZEROS = Buffer.alloc(1 << 20);

/** Whether every byte of p is zero (a run a new file can leave as a hole). */
export function allZero(p: Uint8Array): boolean {
  const b = Buffer.from(p.buffer, p.byteOffset, p.length);
  for (let at = 0; at < b.length; at += ZEROS.length) {
    const part = b.subarray(at, at + ZEROS.length);
    if (!part.equals(ZEROS.subarray(0, part.length))) return false;
  }
  return true;
}

/** Writes p to fd at at, off the JS thread; a short write (a full disk part way) fails. */
export function writePieces(fd: number, p: Pieces, at: number): Promise<void> {
  const n = byteLength(p);
  return new Promise((res, rej) => fs.writev(fd, p as Uint8Array[], at, (e, wrote) => (e ? rej(e) : wrote !== n ? rej(short(wrote, n)) : res())));
}

export function writePiecesSync(fd: number, p: Pieces, at: number): void {
  const n = byteLength(p);
  const wrote = fs.writevSync(fd, p as Uint8Array[], at);
  if (wrote !== n) throw short(wrote, n);
}

const short = (wrote: number, n: number) => new FsError(E.ENOSPC, `wrote ${wrote} of ${n} bytes`);
