import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "bun";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCopyCache, type CopyCache } from "../src/cache/copy-cache.ts";
import { openLocalDir, type LocalDir } from "../src/local/local-dir.ts";

/**
 * The disk tier on a disk whose writes fail: an ext4 on a loop device whose backing file lives on a
 * tmpfs with no room left, so that the ext4 takes bytes into its page cache and its write-back then
 * fails with EIO (as a dying disk's would).
 */
let base: string, cacheDir: LocalDir | undefined, cache: CopyCache | undefined;
/** Set once made, for the clean-up: the tmpfs, the loop device over its file, the ext4 on that. */
let backing: string | undefined, loop: string | undefined, disk: string | undefined;
const evicted: [number, number, string][] = [];

function run(cmd: string[]): string {
  const r = spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString().trim()}`);
  return r.stdout.toString().trim();
}

async function until(what: string, cond: () => boolean): Promise<void> {
  const end = Date.now() + 60_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}

beforeAll(() => {
  base = fs.mkdtempSync(join(tmpdir(), "mcfs-cache-errors-"));
  const store = join(base, "backing");
  const ext4 = join(base, "disk");
  fs.mkdirSync(store);
  fs.mkdirSync(ext4);
  run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", store]);
  backing = store;
  const img = join(store, "img");
  run(["truncate", "-s", "256M", img]);
  run(["mkfs.ext4", "-q", "-F", "-O", "^has_journal", "-E", "lazy_itable_init=0", img]);
  loop = run(["losetup", "-f", "--show", img]);
  run(["mount", "-o", "errors=continue", loop, ext4]);
  disk = ext4;
  fs.mkdirSync(join(ext4, "cache"));
  cacheDir = openLocalDir(join(ext4, "cache"));
  cache = createCopyCache({ dir: cacheDir, ramBytes: 0, ramMaxFileBytes: 0, ramMaxFiles: 0, diskBytes: 1 << 30, onEvict: (i, v, t) => evicted.push([i, v, t]) });
});

afterAll(async () => {
  cache?.close();
  cacheDir?.close();
  // Busy until the file pool's last calls beneath the cache directory are done (it holds it open for them).
  if (disk) await until(`unmounting ${disk}`, () => spawnSync(["umount", disk!]).exitCode === 0);
  // The loop device holds its file on the tmpfs until it is let go.
  if (loop) run(["losetup", "-d", loop]);
  if (backing) run(["umount", backing]);
  fs.rmSync(base, { recursive: true, force: true });
});

async function put(ino: number, size: number): Promise<void> {
  const p = cache!.begin(ino, 1, size)!;
  await p.ready;
  for (let at = 0; at < size; at += 1 << 20) await p.write([new Uint8Array(Math.min(1 << 20, size - at)).fill(ino)], at);
  p.commit();
}

describe("disk tier on a failing disk", () => {
  test("a copy whose bytes could not be written to disk is never served: evicted once its write-out fails; one written is kept", async () => {
    await put(1, 1 << 20);
    // Written before the backing store fills: its write-out finds nothing left to write.
    run(["sync", "-f", join(base, "disk")]);
    const free = Number(run(["df", "--output=avail", "-B1", join(base, "backing")]).split("\n")[1]);
    run(["fallocate", "-l", String(free - (2 << 20)), join(base, "backing", "filler")]);
    await put(2, 48 << 20);
    expect(cache!.has(2, 1)).toBe(true);
    await until("the failed copy's eviction", () => evicted.some(([i]) => i === 2));
    expect(evicted).toEqual([[2, 1, "disk"]]);
    expect(cache!.has(2, 1)).toBe(false);
    expect(cache!.open(2, 1)).toBeUndefined();
    const kept = cache!.open(1, 1)!;
    const got = new Uint8Array(1 << 20);
    expect(fs.readSync(kept.fd, got, 0, got.length, 0)).toBe(got.length);
    expect(got.every((b) => b === 1)).toBe(true);
    fs.closeSync(kept.fd);
  });

  test("a RAM copy pushed out to the failing disk is evicted, not served from a file the disk refused", async () => {
    const demoted: boolean[] = [];
    fs.mkdirSync(join(disk!, "cache2"));
    const dir = openLocalDir(join(disk!, "cache2"));
    const ram = createCopyCache({ dir, ramBytes: 8 << 20, ramMaxFileBytes: 8 << 20, ramMaxFiles: 10, diskBytes: 1 << 30, onEvict: (i, v, t) => evicted.push([i, v, t]), onDemote: (_ino, failed) => demoted.push(failed) });
    try {
      for (const ino of [3, 4]) {
        const p = ram.begin(ino, 1, 6 << 20)!;
        await p.write([new Uint8Array(6 << 20).fill(ino)], 0);
        p.commit();
      }
      await until("the demotion's end", () => demoted.length > 0);
      expect(demoted).toEqual([true]);
      expect(evicted).toContainEqual([3, 1, "disk"]);
      expect(ram.has(3, 1)).toBe(false);
      expect(ram.has(4, 1)).toBe(true);
    } finally {
      ram.close();
      dir.close();
    }
  });
});
