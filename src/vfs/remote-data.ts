import * as fs from "node:fs";
import { join } from "node:path";
import type { MetadataStore, NodeInfo } from "../meta/store.ts";
import type { PeerPool } from "../peer/peer-client.ts";
import { fromConnectError } from "../peer/errors.ts";
import { FsError, E } from "../util/errno.ts";
import type { Logger } from "../util/log.ts";

/** Marks a copy still being fetched (never published, never served). */
export const PARTIAL_MARK = ".mcfs-part-";

/** Bytes held by other nodes, fetched from a live holder of the current version. */
export interface RemoteData {
  /** Read-only fd of a local copy of ino at version, kept in the cache directory. locs: its holders, if known. */
  openCopy(ino: number, version: number, path: string, size: number, locs?: Map<string, number>): Promise<number>;
  /**
   * Ranges of a big remote file, read from a holder on demand while a whole copy is fetched in the
   * background: the first bytes arrive without waiting for the rest. undefined once the copy is here.
   */
  openRanges(ino: number, version: number, path: string, size: number, locs?: Map<string, number>): Promise<RangeReader | undefined>;
  /** Fetch the bytes of ino at version into dest (this node is about to write them). */
  fetchTo(ino: number, version: number, path: string, size: number, dest: string, locs?: Map<string, number>): Promise<void>;
}

/** A copy being fetched: its file, the bytes arrived so far, and readers waiting for more. */
interface Arriving {
  fd: number;
  got: number;
  waiters: (() => void)[];
}

/** How far ahead of an arriving copy a read waits for it instead of asking the holder. */
const FOLLOW_WINDOW = 32 << 20;

export interface RangeReader {
  /** Up to size bytes at offset (fewer only at the end of the file). */
  read(offset: number, size: number): Promise<Uint8Array>;
  close(): void;
}

export interface RemoteDataOptions {
  store: MetadataStore;
  pool: PeerPool;
  nodeId: string;
  cacheDir: string;
  log: Logger;
}

export function createRemoteData(o: RemoteDataOptions): RemoteData {
  const inflight = new Map<string, Promise<void>>();
  let tmpSeq = 0;
  /** Copies being fetched, by destination: their file and how many bytes have arrived. */
  const arriving = new Map<string, Arriving>();
  /** Version of the copy of each inode in the cache directory. */
  const cached = new Map<number, number>();
  // Copies from an earlier run are dropped (only ours: the directory is the user's choice).
  fs.mkdirSync(o.cacheDir, { recursive: true, mode: 0o700 });
  for (const f of fs.readdirSync(o.cacheDir)) if (/^\d+\.\d+$/.test(f) || f.includes(PARTIAL_MARK)) fs.rmSync(join(o.cacheDir, f), { force: true });

  /** The cluster's nodes, asked of the store at most once a second. */
  let known: { at: number; nodes: Promise<Map<string, NodeInfo & { alive: boolean }>> } | undefined;
  function nodes() {
    if (!known || Date.now() - known.at > 1000) known = { at: Date.now(), nodes: o.store.nodes() };
    return known.nodes;
  }

  /** Stream the file from one holder to dest; the byte count must match the record's size. */
  async function fetchFrom(address: string, path: string, size: number, dest: string): Promise<void> {
    const tmp = `${dest}${PARTIAL_MARK}${process.pid}-${++tmpSeq}`;
    const fd = fs.openSync(tmp, "w+", 0o600);
    const progress: Arriving = { fd, got: 0, waiters: [] };
    arriving.set(dest, progress);
    try {
      let got = 0;
      try {
        for await (const ch of o.pool.get(address).readFile({ path, offset: 0n, length: 0n })) {
          if (Number(ch.offset) !== got) throw new FsError(E.EIO, `holder ${address} sent bytes out of order`);
          fs.writeSync(fd, ch.data, 0, ch.data.length, got);
          got += ch.data.length;
          progress.got = got;
          for (const w of progress.waiters.splice(0)) w();
        }
      } catch (e) {
        throw fromConnectError(e);
      }
      // A short copy is never served: a holder that lost bytes is as good as down.
      if (got !== size) throw new FsError(E.EIO, `holder ${address} has ${got} of ${size} bytes of ${path}`);
      // No fsync: copies are dropped at every start, so one cut short by a crash is never served.
      arriving.delete(dest);
      fs.closeSync(fd);
      fs.renameSync(tmp, dest);
      for (const w of progress.waiters.splice(0)) w();
    } catch (e) {
      arriving.delete(dest);
      for (const w of progress.waiters.splice(0)) w();
      try {
        fs.closeSync(fd);
      } catch {
        // already closed
      }
      fs.rmSync(tmp, { force: true });
      throw e;
    }
  }

  async function fetch(ino: number, version: number, path: string, size: number, dest: string, locs?: Map<string, number>): Promise<void> {
    try {
      await fetchOnce(ino, version, path, size, dest, locs);
    } catch (e) {
      // Holders or their addresses may have changed (a holder restarted elsewhere): once more, fresh.
      known = undefined;
      await fetchOnce(ino, version, path, size, dest);
    }
  }

  async function fetchOnce(ino: number, version: number, path: string, size: number, dest: string, given?: Map<string, number>): Promise<void> {
    const [locs, all] = await Promise.all([given ?? o.store.locations(ino), nodes()]);
    const holders = [...locs].filter(([node, v]) => v === version && node !== o.nodeId && all.has(node)).map(([node]) => node);
    // Live holders first; one that stopped beating may still answer.
    const order = [...holders.filter((h) => all.get(h)!.alive), ...holders.filter((h) => !all.get(h)!.alive)];
    const errors: string[] = [];
    for (const node of order) {
      try {
        await fetchFrom(all.get(node)!.address, path, size, dest);
        return;
      } catch (e) {
        errors.push(`${node}: ${(e as Error).message}`);
        o.log.warn({ path, ino, holder: node, err: (e as Error).message }, "holder failed, trying the next one");
      }
    }
    throw new FsError(E.EIO, `no reachable node holds ${path} at version ${version}${errors.length ? ` (${errors.join("; ")})` : ""}`);
  }

  function once(key: string, fn: () => Promise<void>): Promise<void> {
    let p = inflight.get(key);
    if (!p) {
      p = fn().finally(() => inflight.delete(key));
      inflight.set(key, p);
    }
    return p;
  }

  async function copy(ino: number, version: number, path: string, size: number, locs?: Map<string, number>): Promise<string> {
    const file = join(o.cacheDir, `${ino}.${version}`);
    if (cached.get(ino) !== version) {
      await once(file, () => fetch(ino, version, path, size, file, locs));
      const old = cached.get(ino);
      // An open fd on the older copy keeps reading it; the name goes now.
      if (old !== undefined && old !== version) fs.rmSync(join(o.cacheDir, `${ino}.${old}`), { force: true });
      cached.set(ino, version);
    }
    return file;
  }

  return {
    async openCopy(ino, version, path, size, locs) {
      return fs.openSync(await copy(ino, version, path, size, locs), "r");
    },
    async openRanges(ino, version, path, size, locs) {
      if (cached.get(ino) === version) return undefined;
      void copy(ino, version, path, size, locs).catch((e: unknown) => o.log.warn({ path, ino, err: (e as Error).message }, "background copy failed"));
      const [holders, all] = await Promise.all([locs ?? o.store.locations(ino), nodes()]);
      const order = [...holders].filter(([node, v]) => v === version && node !== o.nodeId && all.get(node)?.alive).map(([node]) => all.get(node)!.address);
      if (!order.length) throw new FsError(E.EIO, `no live node holds ${path} at version ${version}`);
      const file = join(o.cacheDir, `${ino}.${version}`);
      let copyFd = -1;
      let at = 0;
      const reader: RangeReader = {
        async read(offset, want) {
          const end = Math.min(size, offset + want);
          const out = new Uint8Array(Math.max(0, end - offset));
          // From the copy when it holds these bytes already (whole, or arrived so far).
          if (cached.get(ino) === version) {
            if (copyFd < 0) copyFd = fs.openSync(file, "r");
            fs.readSync(copyFd, out, 0, out.length, offset);
            return out;
          }
          const part = arriving.get(file);
          if (part && part.got >= end) {
            fs.readSync(part.fd, out, 0, out.length, offset);
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
            try {
              data = (await o.pool.get(order[at]!).read({ path, offset: BigInt(offset + got), length: BigInt(end - offset - got) })).data;
            } catch (e) {
              // This holder failed: the next one, if any; never a short read.
              if (++at >= order.length) throw new FsError(E.EIO, `reading ${path}: ${fromConnectError(e).message}`);
              continue;
            }
            if (data.length === 0) throw new FsError(E.EIO, `holder of ${path} has fewer bytes than its record`);
            out.set(data, got);
            got += data.length;
          }
          return out;
        },
        close() {
          if (copyFd >= 0) fs.closeSync(copyFd);
          copyFd = -1;
        },
      };
      return reader;
    },
    fetchTo(ino, version, path, size, dest, locs) {
      return once(dest, () => fetch(ino, version, path, size, dest, locs));
    },
  };
}
