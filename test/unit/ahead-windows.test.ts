import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createCopyCache, type CopyCache } from "../../src/cache/copy-cache.ts";
import { openLocalDir, type LocalDir } from "../../src/local/local-dir.ts";
import { createAheadWindows, type AheadWindows } from "../../src/vfs/remote/ahead-windows.ts";

const KiB = 1024, MiB = 1 << 20;
let base: string, dir: LocalDir, cache: CopyCache, w: AheadWindows<string>;

beforeEach(() => {
  base = fs.mkdtempSync(join(tmpdir(), "mcfs-unit-ahead-"));
  dir = openLocalDir(base);
  cache = createCopyCache({ dir, ramBytes: 4 * MiB, ramMaxFileBytes: 4 * MiB, ramMaxFiles: 1000, diskBytes: 0, onEvict() {} });
  w = createAheadWindows(cache);
});
afterEach(() => {
  cache.close();
  dir.close();
  fs.rmSync(base, { recursive: true, force: true });
});

/** ino fetched ahead for dir 7 and arrived. */
function ahead(ino: number, size: number): void {
  const p = cache.begin(ino, 1, size, true)!;
  w.fetching(ino, 1, 7, size, `ctx${ino}`);
  p.commit();
  w.arrived(ino);
}

/** A copy asked for (not ahead) of size bytes: evicts the least recently used. */
function asked(ino: number, size: number): void {
  cache.begin(ino, 1, size)!.commit();
}

describe("read-ahead windows", () => {
  test("a window starts at all the room read-ahead has in the cache (half the tier: 2 MiB here), less what waits unopened; an open gives the bytes back and widens it", () => {
    expect(w.room(7)).toBe(2 * MiB);
    ahead(1, 512 * KiB);
    expect(w.room(7)).toBe(1.5 * MiB);
    expect(w.drained(7)).toBe(true);
    ahead(2, MiB);
    expect(w.drained(7)).toBe(false);
    expect(cache.open(1, 1)!.ahead).toBe(true);
    expect(w.used(1)).toBe("ctx1");
    expect(w.used(1)).toBeUndefined();
    // The window grew by the opened copy's bytes, but the cache's room for read-ahead bounds it.
    expect(w.room(7)).toBe(Math.min(2.5 * MiB - MiB, 2 * MiB - MiB));
    // Other directories have windows of their own.
    expect(w.room(8)).toBe(MiB);
  });

  test("a copy evicted unopened narrows its directory's window by 4x its size, down to 128 KiB", () => {
    ahead(1, 100 * KiB);
    // Evicted only once stale: after newer copies as large as the tier (4 MiB).
    for (let i = 0; i < 5; i++) asked(10 + i, 900 * KiB);
    expect(cache.has(1, 1)).toBe(true);
    asked(15, 900 * KiB);
    expect(cache.has(1, 1)).toBe(false);
    expect(w.room(7)).toBe(2 * MiB - 400 * KiB);
    ahead(2, 500 * KiB);
    for (let i = 0; i < 6; i++) asked(20 + i, 900 * KiB);
    expect(w.room(7)).toBe(128 * KiB);
  });

  test("never past what the cache lets copies fetched ahead take: half the tier", () => {
    for (let i = 0; i < 8; i++) {
      ahead(i, 256 * KiB);
      cache.open(i, 1);
      w.used(i);
    }
    expect(w.room(7)).toBe(2 * MiB);
    ahead(100, 512 * KiB);
    expect(w.room(7)).toBe(2 * MiB - 512 * KiB);
    ahead(101, MiB);
    // Another directory's copies waiting take the cache's room for them too.
    expect(w.room(8)).toBe(512 * KiB);
    expect(cache.begin(102, 1, MiB, true)).toBeUndefined();
  });
});
