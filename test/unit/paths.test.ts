import { beforeEach, describe, expect, test } from "bun:test";
import { createMemorySpace, createMemoryStore } from "../../src/meta/memory-store.ts";
import type { MetadataStore } from "../../src/meta/store.ts";
import { createPathCache, type PathCache } from "../../src/vfs/paths.ts";

const ROOT = 1, FILE = 0o100644, DIR = 0o040755;

let store: MetadataStore, paths: PathCache;
let d: number, f: number;
beforeEach(async () => {
  store = createMemoryStore({ space: createMemorySpace(), nodeId: "a" });
  await store.init(0o755, 0, 0);
  paths = createPathCache(store);
  d = (await store.create(ROOT, "d", { mode: DIR, uid: 0, gid: 0 })).ino;
  f = (await store.create(d, "f", { mode: FILE, uid: 0, gid: 0 })).ino;
});

describe("PathCache: directory names read from the store that are news", () => {
  test("a directory's name read the first time counts; a file's never does", async () => {
    expect(await paths.pathOf(f)).toBe("/d/f");
    expect(paths.dirNamesRead).toBe(1);
  });

  test("read again the same after it was forgotten (or all were), it does not count", async () => {
    await paths.pathOf(f);
    paths.forget(d);
    paths.clear();
    expect(await paths.pathOf(f)).toBe("/d/f");
    expect(paths.dirNamesRead).toBe(1);
  });

  test("forgetDirs keeps files' names: a file whose create is held back has its path still", async () => {
    paths.learn({ ...(await store.get(f)), ino: 999, name: "new" });
    await store.rename(ROOT, "d", ROOT, "e", 0);
    paths.forgetDirs();
    expect(await paths.pathOf(999)).toBe("/e/new");
  });

  test("read again after a rename, or learned with another name, it counts", async () => {
    await paths.pathOf(f);
    await store.rename(ROOT, "d", ROOT, "e", 0);
    paths.forget(d);
    expect(await paths.pathOf(f)).toBe("/e/f");
    expect(paths.dirNamesRead).toBe(2);
    paths.learn(await store.rename(ROOT, "e", ROOT, "x", 0).then(() => store.get(d)));
    expect(paths.dirNamesRead).toBe(3);
    expect(await paths.pathOf(f)).toBe("/x/f");
  });
});

describe("PathCache: current paths, for a disk that moved ahead of the caches", () => {
  test("every directory's name is read again, a stale one learned since replaced; a file's own cached name is kept", async () => {
    await paths.pathOf(f);
    await store.rename(ROOT, "d", ROOT, "e", 0);
    // A record fetched before the rename, learned after it.
    paths.learn({ ...(await store.get(d)), name: "d" });
    expect(await paths.pathOf(f)).toBe("/d/f");
    expect(await paths.pathOf(f, true)).toBe("/e/f");
    expect(await paths.pathOf(f)).toBe("/e/f");
    paths.learn({ ...(await store.get(f)), ino: 999, name: "held" });
    expect(await paths.pathOf(999, true)).toBe("/e/held");
    expect(paths.parentOf(999)).toBe(d);
  });
});
