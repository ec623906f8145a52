/** Whole-store scans (SCAN, in batches of 1000) and the repairs fsck and forget make from them. */
import type { RedisClient } from "../redis-connect.ts";
import type { AdminScans, Holders, Membership, ScannedInode } from "../store.ts";
import type { RedisChangeFeed } from "./change-feed.ts";
import type { Keys } from "./keys.ts";
import { parseEntries, parseHolders } from "./record-codec.ts";
import type { RunScript } from "./scripts.ts";
import { S_IFMT, S_IFDIR, S_IFREG } from "../../util/file-mode.ts";

const BATCH = 1000;

export interface AdminScansDeps {
  client: RedisClient;
  keys: Keys;
  run: RunScript;
  membership: Membership;
  feed: RedisChangeFeed;
}

export function createAdminScans({ client, keys, run, membership, feed }: AdminScansDeps): AdminScans {
  /** Pipelined, not one transaction per inode: a snapshot of each is enough for choosing holders. */
  async function holdersMany(inos: number[]): Promise<Holders[]> {
    const all = await Promise.all(inos.flatMap((i) => [client.hGetAll(keys.locations(i)), client.hGetAll(keys.cached(i))]));
    return inos.map((_, i) => parseHolders(all[2 * i]!, all[2 * i + 1]!));
  }

  /**
   * Every inode record's number, in batches (SCAN: records made or removed meanwhile may or may not
   * be seen); progress: inodes seen, and the counter as an upper bound.
   */
  async function scanRecords(onBatch: (inos: number[]) => Promise<void>, onProgress?: (seen: number, bound: number) => void): Promise<void> {
    const bound = Number((await client.get(keys.next)) ?? 0);
    let seen = 0;
    let batch: number[] = [];
    const flush = async () => {
      const inos = batch;
      batch = [];
      await onBatch(inos);
      seen += inos.length;
      onProgress?.(seen, bound);
    };
    for await (const key of client.scanIterator({ MATCH: keys.scan.inodes, COUNT: BATCH })) {
      batch.push(keys.inodeOf(key, "i"));
      if (batch.length >= BATCH) await flush();
    }
    if (batch.length) await flush();
  }

  return {
    async forgetNode(id, onProgress) {
      const bound = Number((await client.get(keys.next)) ?? 0);
      let seen = 0, held = 0;
      let batch: string[] = [];
      /** Files whose root-path holders it was the last of: they may still have a cached copy. */
      const bare: number[] = [];
      const flush = async () => {
        const listKeys = batch;
        batch = [];
        const removed = await Promise.all(listKeys.map((k) => client.hDel(k, id)));
        const left = await Promise.all(listKeys.map((k, i) => (removed[i] && keys.isLocations(k) ? client.exists(k) : Promise.resolve(1))));
        listKeys.forEach((k, i) => {
          if (!removed[i] || !keys.isLocations(k)) return;
          held++;
          if (!left[i]) bare.push(keys.inodeOf(k, "loc"));
        });
        seen += listKeys.length;
        onProgress?.(seen, bound);
      };
      for (const match of [keys.scan.locations, keys.scan.cached]) {
        for await (const key of client.scanIterator({ MATCH: match, COUNT: BATCH })) {
          batch.push(key);
          if (batch.length >= BATCH) await flush();
        }
      }
      if (batch.length) await flush();
      await client.multi().hDel(keys.nodes, id).hDel(keys.seen, id).del(keys.todo(id)).del(keys.copies(id)).del(keys.heartbeat(id)).exec();
      const known = await membership.nodes();
      const [recs, holders] = await Promise.all([Promise.all(bare.map((i) => client.hGet(keys.inode(i), "v"))), holdersMany(bare)]);
      const orphaned = bare.filter((_, i) => ![...holders[i]!.cached].some(([n, c]) => String(c.version) === recs[i] && known.get(n)?.startedAt === c.startedAt)).length;
      return { held, orphaned };
    },
    async scanFiles(onBatch, onProgress) {
      // Every inode, not every holder list: a file with no copy left must be counted too.
      await scanRecords(async (all) => {
        const recs = await Promise.all(all.map((i) => client.hmGet(keys.inode(i), ["m", "s", "v", "p"])));
        const regular = all.map((ino, i) => [ino, recs[i]!] as const).filter(([, r]) => r[0] && (Number(r[0]) & S_IFMT) === S_IFREG);
        const holders = await holdersMany(regular.map(([ino]) => ino));
        onBatch(regular.map(([ino, r], i) => ({ ino, size: Number(r[1] ?? 0), version: Number(r[2] ?? 0), parent: Number(r[3] ?? 0), holders: holders[i]! })));
      }, onProgress);
    },
    async scanInodes(onBatch, onProgress) {
      await scanRecords(async (all) => {
        // One transaction per inode: its record, holders and entries as of one moment (a file
        // written meanwhile must not look like holders of another version).
        const got = (await Promise.all(all.map((i) => client.multi().hmGet(keys.inode(i), ["m", "s", "n", "v", "p", "nm"]).hGetAll(keys.locations(i)).hGetAll(keys.cached(i)).hGetAll(keys.entries(i)).exec()))) as unknown as [(string | null)[], Record<string, string>, Record<string, string>, Record<string, string>][];
        const out: ScannedInode[] = [];
        all.forEach((ino, k) => {
          const [r, loc, cc, ents] = got[k]!;
          // A record deleted between SCAN and the read has no mode: gone, not scanned.
          if (!r[0]) return;
          const mode = Number(r[0]);
          const s: ScannedInode = { ino, mode, size: Number(r[1] ?? 0), nlink: Number(r[2] ?? 1), version: Number(r[3] ?? 1), parent: Number(r[4] ?? 0), name: r[5] ?? "" };
          if ((mode & S_IFMT) === S_IFREG) s.holders = parseHolders(loc, cc);
          if ((mode & S_IFMT) === S_IFDIR) s.entries = parseEntries(ents);
          out.push(s);
        });
        onBatch(out);
      }, onProgress);
    },
    async orphans() {
      return (await client.sMembers(keys.orphans)).map(Number);
    },
    async dropHolder(ino, node, version, why) {
      return (await run("fsckdropholder", [ino, node, version, why])) === 1;
    },
    async dropDanglingEntry(parent, name, ino) {
      const done = (await run("fsckdropentry", [parent, name, ino])) === 1;
      // Kernels that cached the name must forget it.
      if (done) feed.publish({ removed: [[parent, name]], inodes: [parent] });
      return done;
    },
    async settleOrphan(ino) {
      return (await run("fsckorphan", [ino])) as "unlisted" | "purged" | "kept";
    },
  };
}
