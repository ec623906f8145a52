import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCopyCache, readCopy, type CopyCache, type CopyCacheOptions, type CopyData } from "../../src/cache/copy-cache.ts";
import { openLocalDir, type LocalDir } from "../../src/local/local-dir.ts";
import { E, FsError } from "../../src/util/errno.ts";

let base: string, dir: LocalDir, evicted: [number, number, string][], cache: CopyCache;

function open(o: Partial<CopyCacheOptions> = {}): CopyCache {
  cache = createCopyCache({ dir, ramBytes: 100, ramMaxFileBytes: 50, ramMaxFiles: 1000, diskBytes: 1000, onEvict: (i, v, t) => evicted.push([i, v, t]), ...o });
  return cache;
}

/** A committed copy of ino at version, size bytes of fill. */
async function put(ino: number, version: number, size: number, fill = ino & 0xff): Promise<void> {
  const p = cache.begin(ino, version, size)!;
  await p.write([new Uint8Array(size).fill(fill)], 0);
  p.commit();
}

function bytesOf(c: CopyData | undefined, size: number): Uint8Array {
  expect(c).toBeDefined();
  const out = new Uint8Array(size);
  expect(readCopy(c!, out, 0)).toBe(size);
  if ("fd" in c!) fs.closeSync(c.fd);
  return out;
}

/** Wait for a condition the cache's worker threads bring about. */
async function until(cond: () => boolean): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 5000) throw new Error("condition not met");
    await new Promise((r) => setTimeout(r, 1));
  }
}

const usage = (tier: "ram" | "disk") => cache.usage().find((u) => u.tier === tier)!;
/** The copy files there, without the number each whole one's name has of its own (ino.version, ino.version.part-n). */
const files = () => fs.readdirSync(base).map((f) => f.replace(/^(\d+\.\d+)\.\d+/, "$1")).sort();

beforeEach(() => {
  base = fs.mkdtempSync(join(tmpdir(), "mcfs-unit-cache-"));
  dir = openLocalDir(base);
  evicted = [];
});
afterEach(() => {
  cache?.close();
  dir.close();
  fs.rmSync(base, { recursive: true, force: true });
});

describe("copy cache", () => {
  test("small copies live in RAM, large ones on disk named by inode and version", async () => {
    open();
    await put(1, 10, 20);
    await put(2, 11, 60);
    expect(files()).toEqual(["2.11"]);
    expect(bytesOf(cache.open(1, 10), 20)).toEqual(new Uint8Array(20).fill(1));
    expect(bytesOf(cache.open(2, 11), 60)).toEqual(new Uint8Array(60).fill(2));
    expect(cache.usage()).toEqual([
      { tier: "ram", bytes: 20, files: 1, limit: 100 },
      { tier: "disk", bytes: 60, files: 1, limit: 1000 },
    ]);
  });

  test("a copy is served only for the version it holds", async () => {
    open();
    await put(1, 10, 20);
    expect(cache.has(1, 10)).toBe(true);
    expect(cache.has(1, 11)).toBe(false);
    expect(cache.open(1, 11)).toBeUndefined();
    expect(cache.versionOf(1)).toBe(10);
    expect(cache.versionOf(2)).toBeUndefined();
  });

  test("a new version replaces the old copy (and its file), which is not reported evicted", async () => {
    open();
    await put(2, 11, 60);
    await put(2, 12, 70, 9);
    await until(() => files().length === 1);
    expect(files()).toEqual(["2.12"]);
    expect(cache.has(2, 11)).toBe(false);
    expect(bytesOf(cache.open(2, 12), 70)).toEqual(new Uint8Array(70).fill(9));
    expect(usage("disk")).toMatchObject({ bytes: 70, files: 1 });
    expect(evicted).toEqual([]);
  });

  test("a copy's file removed behind it (on the file pool) never takes the file of a copy of the same version made since", async () => {
    open();
    for (let fill = 1; fill <= 20; fill++) await put(5, 7, 60, fill);
    await until(() => files().length === 1);
    expect(files()).toEqual(["5.7"]);
    expect(bytesOf(cache.open(5, 7), 60)).toEqual(new Uint8Array(60).fill(20));
  });

  test("the least recently used copy of the tier is evicted, and unlisted through onEvict", async () => {
    open({ diskBytes: 0 });
    await put(1, 1, 40);
    await put(2, 2, 40);
    bytesOf(cache.open(1, 1), 40);
    await put(3, 3, 40);
    expect(evicted).toEqual([[2, 2, "ram"]]);
    expect([1, 2, 3].map((i) => cache.has(i, i))).toEqual([true, false, true]);
    expect(usage("ram")).toMatchObject({ bytes: 80, files: 2 });
  });

  test("each tier evicts only its own copies", async () => {
    open({ diskBytes: 150 });
    await put(1, 1, 40);
    await put(2, 2, 60);
    await put(3, 3, 60);
    await put(4, 4, 60);
    expect(evicted).toEqual([[2, 2, "disk"]]);
    await until(() => files().length === 2);
    expect(files()).toEqual(["3.3", "4.4"]);
    expect(cache.has(1, 1)).toBe(true);
  });

  test("a disk copy's file is made on the file pool: begin returns without it, ready once it is there; one given up meanwhile leaves no file", async () => {
    open({ ramBytes: 0 });
    const p = cache.begin(1, 1, 10)!;
    // Not made on this thread: no descriptor until the pool's answer is taken in.
    expect(() => p.fd).toThrow();
    await p.ready;
    expect(files()).toEqual(["1.1.part-1"]);
    await p.write([new Uint8Array(10).fill(7)], 0);
    p.commit();
    expect(files()).toEqual(["1.1"]);
    expect(bytesOf(cache.open(1, 1), 10)).toEqual(new Uint8Array(10).fill(7));
    // Given up before its file was made, with a write waiting for it.
    const q = cache.begin(2, 2, 10)!;
    const w = q.write([new Uint8Array(10)], 0);
    q.abort();
    expect(usage("disk").bytes).toBe(10);
    expect(await q.ready.then(() => "made", () => "refused")).toBe("refused");
    expect(await Promise.resolve(w).then(() => "written", () => "refused")).toBe("refused");
    await until(() => files().length === 1);
    expect(files()).toEqual(["1.1"]);
    // Committed before its file was made (no bytes written): refused, given up.
    const e = cache.begin(3, 3, 10)!;
    expect(() => e.commit()).toThrow();
    expect(await e.ready.then(() => "made", () => "refused")).toBe("refused");
    await until(() => files().length === 1);
    expect(cache.has(3, 3)).toBe(false);
    expect(usage("disk")).toMatchObject({ bytes: 10, files: 1 });
  });

  test("a copy being fetched counts against its tier until commit or abort", async () => {
    open();
    const p = cache.begin(1, 1, 60)!;
    expect(usage("disk")).toEqual({ tier: "disk", bytes: 60, files: 0, limit: 1000 });
    await p.ready;
    expect(files()).toEqual([expect.stringMatching(/^1\.1\.part-\d+$/)]);
    await p.write([new Uint8Array([1, 2, 3])], 0);
    const seen = new Uint8Array(3);
    expect(fs.readSync(p.fd, seen, 0, 3, 0)).toBe(3);
    expect(seen).toEqual(new Uint8Array([1, 2, 3]));
    expect(cache.has(1, 1)).toBe(false);
    p.abort();
    p.abort();
    expect(usage("disk")).toMatchObject({ bytes: 0, files: 0 });
    // Its file goes on the file pool.
    await until(() => files().length === 0);
    const q = cache.begin(2, 2, 30)!;
    expect(usage("ram")).toMatchObject({ bytes: 30, files: 0 });
    q.commit();
    q.abort();
    expect(usage("ram")).toMatchObject({ bytes: 30, files: 1 });
  });

  test("a copy aborted while a write to it is on its way: the write never lands in a file opened since (its descriptor's number reused)", async () => {
    open({ diskBytes: 1 << 30 });
    const data = new Uint8Array(1 << 20).fill(7);
    const other = join(base, "..", `${base.split("/").pop()}-other`);
    let landed = 0;
    try {
      for (let i = 0; i < 100; i++) {
        const p = cache.begin(i + 1, 1, data.length)!;
        const w = Promise.resolve(p.write([data], 0)).catch(() => {});
        p.abort();
        // The lowest free number: the one the copy just gave back, unless still held.
        const fd = fs.openSync(other, "w+");
        await w;
        if (fs.fstatSync(fd).size > 0) landed++;
        fs.closeSync(fd);
      }
    } finally {
      fs.rmSync(other, { force: true });
    }
    expect(landed).toBe(0);
    await until(() => files().length === 0);
    expect(usage("disk")).toMatchObject({ bytes: 0, files: 0 });
  });

  test("a RAM copy pushed out moves to the disk tier: still held and listed, served from its memfd until its file is written", async () => {
    open();
    await put(1, 1, 40);
    await put(2, 2, 40);
    const p = cache.begin(3, 3, 40)!;
    expect(evicted).toEqual([]);
    expect(cache.has(1, 1)).toBe(true);
    expect(usage("ram")).toMatchObject({ bytes: 80, files: 1 });
    expect(usage("disk")).toMatchObject({ bytes: 40, files: 1 });
    expect(bytesOf(cache.open(1, 1), 40)).toEqual(new Uint8Array(40).fill(1));
    await until(() => files().includes("1.1"));
    expect(files()).toEqual(["1.1"]);
    const c = cache.open(1, 1)!;
    expect(fs.readlinkSync(`/proc/self/fd/${c.fd}`)).toMatch(new RegExp(`^${join(base, "1.1")}\\.\\d+$`));
    expect(bytesOf(c, 40)).toEqual(new Uint8Array(40).fill(1));
    p.abort();
  });

  test("a burst of copies into a full RAM tier moves at most 64 of those it pushes out to disk at once, the rest dropped: fds stay bounded", async () => {
    open({ ramBytes: 1 << 20, ramMaxFiles: 300, diskBytes: 1 << 20 });
    for (let i = 1; i <= 300; i++) await put(i, i, 40);
    const fds = () => fs.readdirSync("/proc/self/fd").length;
    const before = fds();
    // One turn, as a batch of files fetched from another node lands: no move can finish meanwhile.
    const ps = Array.from({ length: 300 }, (_, k) => cache.begin(1000 + k, 1, 40)!);
    expect(usage("disk").files).toBe(64);
    expect(evicted.length).toBe(300 - 64);
    // The new copies' memfds, and at most three fds a moving copy; those dropped gave theirs back.
    expect(fds() - before).toBeLessThanOrEqual(300 + 3 * 64 - (300 - 64));
    for (const p of ps) p.abort();
    await until(() => files().length === 64);
  });

  test("a moved copy takes room on disk from the disk tier's least recently used; none is kept that the disk tier cannot hold", async () => {
    open({ diskBytes: 50 });
    await put(1, 1, 40);
    await put(2, 2, 40);
    await put(3, 3, 40);
    await put(4, 4, 40);
    // 1 moved to disk, then pushed out of it by 2.
    expect(evicted).toEqual([[1, 1, "disk"]]);
    await until(() => !files().some((f) => f.includes("part")) && files().length === 1);
    expect(files()).toEqual(["2.2"]);
    expect([1, 2, 3, 4].map((i) => cache.has(i, i))).toEqual([false, true, true, true]);
    const tiny = createCopyCache({ dir, ramBytes: 100, ramMaxFileBytes: 50, ramMaxFiles: 1000, diskBytes: 30, onEvict: (i, v, t) => evicted.push([i, v, t]) });
    try {
      const p = tiny.begin(7, 7, 40)!;
      p.commit();
      const q = tiny.begin(8, 8, 40)!;
      q.commit();
      tiny.begin(9, 9, 40)!.abort();
      expect(evicted.at(-1)).toEqual([7, 7, "ram"]);
    } finally {
      tiny.close();
    }
  });

  test("a copy replaced by a new version, or dropped, while it moves leaves no file behind", async () => {
    open();
    await put(1, 1, 40);
    await put(2, 2, 40);
    // 1 moves to disk; its new version replaces it there before its file is written (2 moves too).
    await put(3, 3, 40);
    await put(1, 5, 40, 9);
    expect(cache.has(1, 1)).toBe(false);
    expect(bytesOf(cache.open(1, 5), 40)).toEqual(new Uint8Array(40).fill(9));
    cache.dropAll();
    await until(() => files().length === 0);
    expect(evicted.sort()).toEqual([[1, 5, "ram"], [2, 2, "disk"], [3, 3, "ram"]]);
  });

  test("room for a new copy is made by evicting committed ones", async () => {
    open({ diskBytes: 0 });
    await put(1, 1, 50);
    await put(2, 2, 40);
    const p = cache.begin(3, 3, 50)!;
    expect(evicted).toEqual([[1, 1, "ram"]]);
    p.abort();
  });

  test("a big disk copy keeps in the page cache only the bytes last written: the rest is written out and dropped, and reads the same", async () => {
    open({ diskBytes: 1 << 30 });
    const piece = 8 << 20;
    const pieces = 32;
    const p = cache.begin(1, 1, piece * pieces)!;
    await p.ready;
    // Out of order within a window, as parts fetched at once land.
    for (let i = 0; i < pieces; i += 2) await Promise.all([i + 1, i].map((k) => p.write([new Uint8Array(piece).fill(k + 1)], k * piece)));
    p.commit();
    const file = join(base, fs.readdirSync(base)[0]!);
    const resident = () => Number(Bun.spawnSync(["fincore", "--bytes", "--noheadings", "--output", "RES", file]).stdout.toString().trim());
    await until(() => resident() <= 96 << 20);
    const c = cache.open(1, 1)!;
    const got = new Uint8Array(piece);
    for (let k = 0; k < pieces; k++) {
      fs.readSync(c.fd, got, 0, piece, k * piece);
      expect(got.every((b) => b === k + 1)).toBe(true);
    }
    fs.closeSync(c.fd);
  });

  test("a copy that fits no tier is refused with EFBIG; one longer than announced with EIO", async () => {
    open();
    expect(cache.fits(1000)).toBe(true);
    expect(cache.fits(1001)).toBe(false);
    expect(() => cache.begin(1, 1, 1001)!).toThrow(expect.objectContaining({ errno: E.EFBIG }));
    const p = cache.begin(1, 1, 4)!;
    let err: unknown;
    try {
      p.write([new Uint8Array(5)], 0);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(FsError);
    expect((err as FsError).errno).toBe(E.EIO);
    p.abort();
    expect(usage("ram").bytes).toBe(0);
  });

  test("a file bigger than the RAM tier goes to disk even below ramMaxFileBytes", async () => {
    open({ ramBytes: 10, ramMaxFileBytes: 50 });
    await put(1, 1, 20);
    expect(files()).toEqual(["1.1"]);
  });

  test("dropAll evicts every copy through onEvict; close forgets them silently", async () => {
    open();
    await put(1, 1, 10);
    await put(2, 2, 60);
    cache.dropAll();
    expect(evicted.sort()).toEqual([[1, 1, "ram"], [2, 2, "disk"]]);
    await until(() => files().length === 0);
    await put(3, 3, 60);
    cache.close();
    expect(evicted).toHaveLength(2);
    expect(files()).toEqual([]);
  });

  test("leftover copies are removed at start; other files are left alone", () => {
    for (const f of ["5.7", "5.7.4", "5.7.part-3", "notes.txt", "5.x", "5.7.4.bak"]) fs.writeFileSync(join(base, f), "old");
    open();
    expect(fs.readdirSync(base).sort()).toEqual(["5.7.4.bak", "5.x", "notes.txt"]);
    expect(cache.has(5, 7)).toBe(false);
  });

  test("a reader keeps reading a copy evicted under it", async () => {
    open({ diskBytes: 60 });
    await put(1, 1, 60);
    const c = cache.open(1, 1)!;
    await put(2, 2, 60);
    expect(evicted).toEqual([[1, 1, "disk"]]);
    expect(bytesOf(c, 60)).toEqual(new Uint8Array(60).fill(1));
  });

  test("copies on their way cannot be evicted: a copy that would take the tier past its size is refused", () => {
    open({ diskBytes: 0 });
    const p = cache.begin(1, 1, 40)!;
    const q = cache.begin(2, 2, 40)!;
    expect(cache.begin(3, 3, 40)).toBeUndefined();
    expect(usage("ram").bytes).toBe(80);
    p.commit();
    // Committed copies make room as before.
    const r = cache.begin(3, 3, 40)!;
    expect(evicted).toEqual([[1, 1, "ram"]]);
    expect(usage("ram").bytes).toBeLessThanOrEqual(100);
    q.abort();
    r.abort();
    expect(usage("ram").bytes).toBe(0);
  });

  test("copies fetched ahead take at most half their tier; the first open says so; those evicted unopened are counted", async () => {
    open({ diskBytes: 0 });
    const a = cache.begin(1, 1, 30, true)!;
    expect(cache.begin(2, 2, 30, true)).toBeUndefined();
    expect(cache.ahead()).toEqual({ bytes: 30, limit: 50, evictedUnread: 0 });
    await a.write([new Uint8Array(30).fill(1)], 0);
    a.commit();
    const b = cache.begin(2, 2, 20, true)!;
    b.commit();
    const c = cache.open(1, 1)!;
    expect(c.ahead).toBe(true);
    bytesOf(c, 30);
    expect(cache.open(1, 1)!.ahead).toBeUndefined();
    expect(cache.ahead()).toMatchObject({ bytes: 20, evictedUnread: 0 });
    // 1 was opened, 2 was not: 2 waits for its reader while 1 and the newer 3 go.
    await put(3, 3, 50);
    await put(4, 4, 50);
    expect(evicted.map((e) => e[0])).toEqual([1, 3]);
    // Newer copies as large as the tier arrived after it: 2 is stale (out of the budget), the least recently used, and counted as evicted unopened.
    expect(cache.ahead()).toEqual({ bytes: 0, limit: 50, evictedUnread: 0 });
    await put(5, 5, 50);
    expect(evicted.map((e) => e[0])).toEqual([1, 3, 2]);
    expect(cache.ahead()).toEqual({ bytes: 0, limit: 50, evictedUnread: 20 });
  });

  test("a copy fetched ahead and opened without being used (a grant's fd) stays unopened until an open elsewhere uses it, once", async () => {
    open({ diskBytes: 0 });
    const a = cache.begin(1, 1, 30, true)!;
    await a.write([new Uint8Array(30).fill(7)], 0);
    a.commit();
    const peeked = cache.open(1, 1, false)!;
    expect(peeked.ahead).toBeUndefined();
    expect(bytesOf(peeked, 30)).toEqual(new Uint8Array(30).fill(7));
    expect(cache.ahead()).toMatchObject({ bytes: 30 });
    expect([cache.use(1, 2), cache.use(2, 1)]).toEqual([false, false]);
    expect(cache.use(1, 1)).toBe(true);
    expect(cache.use(1, 1)).toBe(false);
    expect(cache.ahead()).toMatchObject({ bytes: 0, evictedUnread: 0 });
  });

  test("an unopened copy fetched ahead goes after every other copy until newer ones as large as its tier arrived; then it is stale: it frees the read-ahead budget and ages as any copy", async () => {
    open({ diskBytes: 0 });
    cache.begin(1, 1, 40, true)!.commit();
    expect(cache.begin(2, 2, 20, true)).toBeUndefined();
    await put(2, 2, 30);
    bytesOf(cache.open(2, 2), 30);
    await put(3, 3, 30);
    await put(4, 4, 30);
    expect(evicted.map((e) => e[0])).toEqual([2]);
    await put(5, 5, 30);
    expect(evicted.map((e) => e[0])).toEqual([2, 3]);
    // 120 bytes arrived after 1: stale, still held, no longer holding the budget.
    expect(cache.has(1, 1)).toBe(true);
    expect(cache.ahead()).toEqual({ bytes: 0, limit: 50, evictedUnread: 0 });
    const p = cache.begin(6, 6, 20, true)!;
    expect(p).toBeDefined();
    p.abort();
    await put(7, 7, 30);
    expect(evicted.map((e) => e[0])).toEqual([2, 3, 1]);
    expect(cache.ahead()).toEqual({ bytes: 0, limit: 50, evictedUnread: 40 });
  });

  test("a fresh copy fetched ahead moves to the disk tier fresh: opened copies there go first", async () => {
    open({ ramBytes: 100, ramMaxFileBytes: 100, diskBytes: 200 });
    cache.begin(1, 1, 30, true)!.commit();
    // RAM holds nothing but 1: it moves down, fresh.
    await put(2, 2, 80);
    await put(3, 3, 70);
    bytesOf(cache.open(2, 2), 80);
    await put(4, 4, 70);
    await put(5, 5, 70);
    // The disk tier (200) held 1, 2 (opened), 3: room for 4 is made from 2, not the least recently used 1.
    expect(evicted).toEqual([[2, 2, "disk"]]);
    expect(cache.open(1, 1)!.ahead).toBe(true);
  });

  test("a RAM copy is a sealed memfd: each open gets a fd of its own that cannot change it and outlives the copy's eviction", async () => {
    open({ ramMaxFiles: 2, diskBytes: 0 });
    await put(1, 1, 20);
    const c = cache.open(1, 1)!;
    expect(fs.readlinkSync(`/proc/self/fd/${c.fd}`)).toStartWith("/memfd:");
    expect(c.fd).not.toBe(cache.open(1, 1)!.fd);
    expect(() => fs.writeSync(c.fd, new Uint8Array(1), 0, 1, 0)).toThrow();
    expect(() => fs.ftruncateSync(c.fd, 0)).toThrow();
    expect(() => fs.ftruncateSync(c.fd, 100)).toThrow();
    expect(bytesOf(cache.open(1, 1)!, 20)).toEqual(new Uint8Array(20).fill(1));
    await put(2, 2, 20);
    // Past ramMaxFiles copies (each holds a fd): the least recently used goes, whatever the bytes.
    await put(3, 3, 20);
    expect(evicted).toEqual([[1, 1, "ram"]]);
    expect(usage("ram")).toMatchObject({ bytes: 40, files: 2 });
    expect(bytesOf(c, 20)).toEqual(new Uint8Array(20).fill(1));
  });

  test("settled: at once with no copy on its way, else once one of them is committed or aborted", async () => {
    open();
    let done = false;
    await cache.settled();
    const a = cache.begin(1, 1, 10)!;
    const b = cache.begin(2, 2, 10)!;
    const first = cache.settled().then(() => (done = true));
    await Promise.resolve();
    expect(done).toBe(false);
    a.abort();
    await first;
    const second = cache.settled();
    b.commit();
    await second;
    await cache.settled();
  });
});
