import { describe, expect, test } from "bun:test";
import { createMemorySpace, createMemoryStore } from "../../src/meta/memory-store.ts";
import type { Inode } from "../../src/meta/store.ts";
import { createRecentSet } from "../../src/util/recent-set.ts";
import { createWatches } from "../../src/vfs/open-watches.ts";
import { createOwnWatches } from "../../src/vfs/own-watches.ts";
import { waitFor } from "../helpers/env.ts";

const ROOT = 1, FILE = 0o100644, DIR = 0o040755;

describe("own watches", () => {
  test("a reader's first open of a file this node wrote watches the others it wrote in that directory, in one read; not the one opened, nor others' files, nor one changed while read", async () => {
    const space = createMemorySpace();
    const a = createMemoryStore({ space, nodeId: "a" });
    const b = createMemoryStore({ space, nodeId: "b" });
    await a.init(0o755, 0, 0);
    const d = await a.create(ROOT, "in", { mode: DIR, uid: 0, gid: 0 });
    const mine: Inode[] = [];
    for (let i = 0; i < 4; i++) mine.push(await a.create(d.ino, `a${i}`, { mode: FILE, uid: 0, gid: 0, holder: "a" }));
    const theirs = await b.create(d.ino, "b0", { mode: FILE, uid: 0, gid: 0, holder: "b" });
    const sub = await a.create(d.ino, "sub", { mode: DIR, uid: 0, gid: 0 });
    const watches = createWatches();
    const writtenHere = createRecentSet<number>(100);
    for (const r of [...mine, sub]) writtenHere.add(r.ino);
    const listing = new Map([...mine, theirs, sub].map((r) => [r.name, r.ino]));
    let reads = 0;
    const own = createOwnWatches({
      store: { recordsAndHolders: (inos, watch) => (reads++, a.recordsAndHolders(inos, watch)) },
      watches,
      writtenHere,
      entries: (dir) => (dir === d.ino ? listing : undefined),
    });
    // Another node's change of a2 comes while the read is on its way: a2's answer is not kept.
    const changing = mine[2]!.ino;
    own.opened(d.ino, mine[0]!.ino);
    watches.drop([changing]);
    own.opened(d.ino, mine[0]!.ino);
    await waitFor("the read", () => watches.get(mine[1]!.ino) !== undefined);
    expect(reads).toBe(1);
    expect(watches.get(mine[0]!.ino)).toBeUndefined();
    expect(watches.get(changing)).toBeUndefined();
    expect(watches.get(theirs.ino)).toBeUndefined();
    expect(watches.get(sub.ino)).toBeUndefined();
    expect(watches.get(mine[3]!.ino)?.r).toEqual(await a.get(mine[3]!.ino));
    // Watched in the store: a new version of a3 written elsewhere returns once this node heard of it.
    const heard: number[] = [];
    await a.subscribe((invs, ack) => {
      for (const inv of invs) heard.push(...inv.data, ...inv.inodes);
      ack?.();
    }, () => {});
    await b.setData(mine[3]!.ino, 1, 1n, 1n, "b", "/in/a3");
    expect(heard).toContain(mine[3]!.ino);
  });
});
