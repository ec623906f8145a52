import { beforeEach, describe, expect, test } from "bun:test";
import { createMemorySpace, createMemoryStore } from "../../src/meta/memory-store.ts";
import type { Inode, Invalidation, MetadataStore } from "../../src/meta/store.ts";
import { createMetaCache, type MetaCache } from "../../src/vfs/meta-cache.ts";
import { createPathCache } from "../../src/vfs/paths.ts";

const ROOT = 1, FILE = 0o100644, DIR = 0o040755;

/** Node A's cache over the memory store; node B changes the same metadata and A hears it. */
let a: MetadataStore, b: MetadataStore, cache: MetaCache, heard: Invalidation[];
let skip: Set<number>;

function makeCache(attrCacheMs = 60_000): MetaCache {
  return createMetaCache({ store: a, paths: createPathCache(a), attrCacheMs, skipPrefetch: (ino) => skip.has(ino) });
}

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 500) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(2);
  }
}

/** The listing of dir, loaded (the first call only starts the load). */
async function listing(dir: number): Promise<ReadonlyMap<string, number>> {
  cache.listed(dir, "");
  await until("the listing", () => cache.entries(dir) !== undefined);
  return cache.entries(dir)!;
}

beforeEach(async () => {
  const space = createMemorySpace();
  a = createMemoryStore({ space, nodeId: "a" });
  b = createMemoryStore({ space, nodeId: "b" });
  await a.init(0o755, 0, 0);
  skip = new Set();
  heard = [];
  cache = makeCache();
  await a.subscribe((invs) => {
    heard.push(...invs);
    for (const i of invs) cache.invalidate(i);
  }, () => cache.resync());
});

describe("meta cache", () => {
  test("a learned record is fresh for attrCacheMs, then not", async () => {
    const f = await a.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    cache = makeCache(30);
    expect(cache.fresh(f.ino)).toBeUndefined();
    expect(cache.learn(f)).toBe(f);
    expect(cache.fresh(f.ino)).toBe(f);
    await Bun.sleep(40);
    expect(cache.fresh(f.ino)).toBeUndefined();
  });

  test("with attrCacheMs 0 nothing is kept", async () => {
    cache = makeCache(0);
    const f = await a.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    cache.learn(f);
    expect(cache.fresh(f.ino)).toBeUndefined();
  });

  test("listed: undefined until the listing loads, then the inode or null", async () => {
    const f = await a.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    expect(cache.listed(ROOT, "f")).toBeUndefined();
    await listing(ROOT);
    expect(cache.listed(ROOT, "f")).toBe(f.ino);
    expect(cache.listed(ROOT, "nope")).toBeNull();
  });

  test("loading a listing prefetches its entries' records, except those to skip", async () => {
    const f = await a.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    const g = await a.create(ROOT, "g", { mode: FILE, uid: 0, gid: 0 });
    skip.add(g.ino);
    await listing(ROOT);
    await until("the prefetch", () => cache.fresh(f.ino) !== undefined);
    expect(cache.fresh(f.ino)).toEqual(f);
    expect(cache.fresh(g.ino)).toBeUndefined();
  });

  describe("prefetch order", () => {
    /** The inodes each getMany asked for; each call waits until the test lets it go. */
    let asked: number[][], go: (() => void)[];
    beforeEach(() => {
      asked = [];
      go = [];
      const gated: MetadataStore = {
        ...a,
        async getMany(inos) {
          asked.push([...inos]);
          await new Promise<void>((r) => go.push(r));
          return a.getMany(inos);
        },
      };
      cache = createMetaCache({ store: gated, paths: createPathCache(a), attrCacheMs: 60_000, skipPrefetch: () => false, prefetchMax: 650 });
    });

    /** 600 files, the first 300 renamed since: the listing gives names in another order than their inodes'. */
    async function madeThenRenamed(): Promise<number[]> {
      const inos: number[] = [];
      for (let i = 0; i < 600; i++) inos.push((await a.create(ROOT, `f${i}`, { mode: FILE, uid: 0, gid: 0 })).ino);
      for (let i = 0; i < 300; i++) await a.rename(ROOT, `f${i}`, ROOT, `g${i}`, 0);
      expect((await a.listDir(ROOT)).slice(0, 2).map((e) => e.name)).toEqual(["f300", "f301"]);
      return inos;
    }

    test("records are read in the order their inodes were made, a bounded batch at a time", async () => {
      const inos = await madeThenRenamed();
      cache.listed(ROOT, "");
      for (let n = 1; n <= 3; n++) {
        await until(`getMany ${n}`, () => asked.length === n);
        go.shift()!();
      }
      expect(asked.flat()).toEqual(inos);
      expect(asked.map((x) => x.length)).toEqual([250, 250, 100]);
      await until("the prefetch", () => inos.every((i) => cache.fresh(i) !== undefined));
    });

    test("a directory too big to prefetch whole: a name looked up with no record at hand reads the next names' by inode number, a window at a time", async () => {
      const inos: number[] = [];
      for (let i = 0; i < 700; i++) inos.push((await a.create(ROOT, `f${i}`, { mode: FILE, uid: 0, gid: 0 })).ino);
      for (let i = 0; i < 100; i++) await a.rename(ROOT, `f${i}`, ROOT, `g${i}`, 0);
      await listing(ROOT);
      expect(asked).toEqual([]);
      cache.missed(ROOT, inos[10]!);
      await until("the first window", () => asked.length === 1);
      // Looked up while that window is read: the next one begins there (what is read by then is passed over).
      cache.missed(ROOT, inos[20]!);
      go.shift()!();
      await until("the second window", () => asked.length === 2);
      expect(asked[0]).toEqual(inos.slice(10, 260));
      expect(asked[1]).toEqual(inos.slice(260, 510));
      go.shift()!();
      await until("the second window's records", () => cache.fresh(inos[509]!) !== undefined);
      expect(cache.fresh(inos[9]!)).toBeUndefined();
      expect(cache.fresh(inos[510]!)).toBeUndefined();
      // A renamed name is known by its record's name.
      expect(cache.fresh(inos[50]!)?.name).toBe("g50");
      cache.missed(ROOT, inos[650]!);
      await until("the third window", () => asked.length === 3);
      expect(asked[2]).toEqual(inos.slice(650, 700));
      go.shift()!();
      await until("the third window's records", () => cache.fresh(inos[699]!) !== undefined);
    });

    test("a window's records once expired are read again by the next window from them, and passed over while fresh", async () => {
      const gated = createMetaCache({ store: { ...a, getMany: async (inos) => (asked.push([...inos]), a.getMany(inos)) }, paths: createPathCache(a), attrCacheMs: 1000, skipPrefetch: () => false, prefetchMax: 650 });
      const inos: number[] = [];
      for (let i = 0; i < 700; i++) inos.push((await a.create(ROOT, `f${i}`, { mode: FILE, uid: 0, gid: 0 })).ino);
      gated.listed(ROOT, "");
      await until("the listing", () => gated.entries(ROOT) !== undefined);
      gated.missed(ROOT, inos[0]!);
      await until("the window", () => gated.fresh(inos[249]!) !== undefined);
      gated.missed(ROOT, inos[100]!);
      await until("the next window", () => gated.fresh(inos[499]!) !== undefined);
      expect(asked).toEqual([inos.slice(0, 250), inos.slice(250, 500)]);
      // The last of the window learned last.
      for (const end = Date.now() + 10_000; gated.fresh(inos[249]!) !== undefined; await Bun.sleep(20)) if (Date.now() > end) throw new Error("the records never expired");
      gated.missed(ROOT, inos[0]!);
      await until("the window read again", () => gated.fresh(inos[249]!) !== undefined);
      expect(asked[2]).toEqual(inos.slice(0, 250));
    });

    test("a name looked up before its record was read moves the reading to it; the rest is still read, each once", async () => {
      const inos = await madeThenRenamed();
      cache.listed(ROOT, "");
      await until("the first getMany", () => asked.length === 1);
      cache.missed(ROOT, inos[450]!);
      go.shift()!();
      await until("the second getMany", () => asked.length === 2);
      expect(asked[1]).toEqual(inos.slice(450, 600));
      go.shift()!();
      await until("the third getMany", () => asked.length === 3);
      expect(asked[2]).toEqual(inos.slice(250, 450));
      go.shift()!();
      await until("the prefetch", () => inos.every((i) => cache.fresh(i) !== undefined));
      expect(asked.length).toBe(3);
    });
  });

  test("another node's create and remove reach the listing", async () => {
    await listing(ROOT);
    const f = await b.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    await until("the create", () => cache.listed(ROOT, "f") !== null);
    // The notice names the entry and its inode.
    expect(cache.listed(ROOT, "f")).toBe(f.ino);
    await b.remove(ROOT, "f", false);
    await until("the remove", () => cache.listed(ROOT, "f") === null);
    expect(heard.map((i) => i.origin)).toEqual(["b", "b"]);
    expect(f.ino).toBeGreaterThan(ROOT);
  });

  test("reading a listing from the store teaches the cached one the inodes of other nodes' new names", async () => {
    await listing(ROOT);
    const f = await b.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    await until("the create", () => cache.listed(ROOT, "f") !== null);
    // A notice without the inode (as a node of an earlier version sends).
    cache.dirChanged(ROOT, ["f", 0]);
    expect(cache.listed(ROOT, "f")).toBe(0);
    expect((await cache.readListing(ROOT)).map((e) => [e.name, e.ino])).toEqual([["f", f.ino]]);
    expect(cache.listed(ROOT, "f")).toBe(f.ino);
  });

  test("a listing read while another change was heard teaches nothing (the store may have been read before it)", async () => {
    await listing(ROOT);
    await b.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    await until("the create", () => cache.listed(ROOT, "f") !== null);
    cache.dirChanged(ROOT, ["f", 0]);
    const read = cache.readListing(ROOT);
    cache.dirChanged(ROOT, ["g", 0]);
    await read;
    expect(cache.listed(ROOT, "f")).toBe(0);
  });

  test("another node's change of an inode drops its record", async () => {
    const f = await a.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    cache.learn(f);
    await b.setAttrs(f.ino, { uid: 7 });
    await until("the change", () => cache.fresh(f.ino) === undefined);
  });

  test("another node's create brings a held record of its directory up to the store's (times, links); an older one is not brought back; any other change drops it", async () => {
    const d = await a.create(ROOT, "d", { mode: DIR, uid: 0, gid: 0 });
    cache.learn(await a.get(d.ino));
    const creates = heard.length;
    await b.create(d.ino, "f", { mode: FILE, uid: 0, gid: 0 });
    await b.create(d.ino, "sub", { mode: DIR, uid: 0, gid: 0 });
    await until("both creates", () => heard.length >= creates + 2);
    expect(cache.fresh(d.ino)).toEqual(await a.get(d.ino));
    // Read after a change its message is late for: the record stays as read.
    await b.create(d.ino, "g", { mode: FILE, uid: 0, gid: 0, ctime: 1n });
    const now = await a.get(d.ino);
    cache.learn(now);
    cache.invalidate({ origin: "b", added: [[d.ino, "old", 99]], removed: [], inodes: [d.ino], data: [], todo: [], touched: [[d.ino, "2", now.nlink]] });
    expect(cache.fresh(d.ino)).toEqual(now);
    await b.setAttrs(d.ino, { mode: 0o040700 });
    await until("the chmod", () => cache.fresh(d.ino) === undefined);
    // A record this node made up ahead of the store (its own clock) is not kept past a mkdir elsewhere.
    const ahead = { ...(await a.get(d.ino)), ctime: 9_000_000_000_000_000_000n };
    cache.learn(ahead);
    const told = heard.length;
    await b.create(d.ino, "sub2", { mode: DIR, uid: 0, gid: 0 });
    await until("the mkdir", () => heard.length > told);
    expect(cache.fresh(d.ino)).toBeUndefined();
  });

  test("a create heard after its directory's record was read again gives that record to the mirror again: the kernel's invalidation of the change took the shim's copy", async () => {
    const given: Inode[] = [];
    const noop = () => {};
    cache = createMetaCache({
      store: a, paths: createPathCache(a), attrCacheMs: 60_000, skipPrefetch: () => false,
      mirror: { prefetched: noop, learned: (r) => void given.push(r), dropName: noop, dropInode: noop, dropDir: noop, dropAll: noop },
    });
    const d = await a.create(ROOT, "d", { mode: DIR, uid: 0, gid: 0 });
    await b.create(d.ino, "f", { mode: FILE, uid: 0, gid: 0 });
    const now = cache.learn(await a.get(d.ino));
    given.length = 0;
    cache.invalidate({ origin: "b", added: [[d.ino, "f", 99]], removed: [], inodes: [d.ino], data: [], todo: [], touched: [[d.ino, String(now.ctime), now.nlink]] });
    expect(cache.fresh(d.ino)).toEqual(now);
    expect(given).toEqual([now]);
  });

  test("a directory renamed away on another node loses its listing", async () => {
    const d = await a.create(ROOT, "d", { mode: DIR, uid: 0, gid: 0 });
    await a.create(d.ino, "x", { mode: FILE, uid: 0, gid: 0 });
    await listing(d.ino);
    const e = await a.create(ROOT, "e", { mode: DIR, uid: 0, gid: 0 });
    await b.rename(ROOT, "d", e.ino, "d", 0);
    await until("the rename", () => cache.entries(d.ino) === undefined);
  });

  test("a change heard while a listing loads is applied to it", async () => {
    await a.create(ROOT, "old", { mode: FILE, uid: 0, gid: 0 });
    expect(cache.listed(ROOT, "x")).toBeUndefined();
    cache.dirChanged(ROOT, ["new", 42], "old");
    const l = await listing(ROOT);
    expect(new Map(l)).toEqual(new Map([["new", 42]]));
  });

  test("dirChanged edits a loaded listing and leaves unloaded directories unloaded", async () => {
    await listing(ROOT);
    cache.dirChanged(ROOT, ["n", 9]);
    expect(cache.listed(ROOT, "n")).toBe(9);
    cache.dirChanged(ROOT, undefined, "n");
    expect(cache.listed(ROOT, "n")).toBeNull();
    cache.dirChanged(77, ["n", 9]);
    expect(cache.entries(77)).toBeUndefined();
    cache.dropListing(ROOT);
    expect(cache.entries(ROOT)).toBeUndefined();
  });

  test("resync forgets everything, and a listing loading across it is thrown away", async () => {
    const f = await a.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    await listing(ROOT);
    cache.learn(f);
    const d = await a.create(ROOT, "d", { mode: DIR, uid: 0, gid: 0 });
    expect(cache.listed(d.ino, "x")).toBeUndefined();
    cache.resync();
    expect(cache.fresh(f.ino)).toBeUndefined();
    expect(cache.entries(ROOT)).toBeUndefined();
    await Bun.sleep(5);
    expect(cache.entries(d.ino)).toBeUndefined();
  });

  test("changing drops the directories' records around the change", async () => {
    const d = await a.create(ROOT, "d", { mode: DIR, uid: 0, gid: 0 });
    cache.learn(d);
    const r = await cache.changing([d.ino], async () => {
      expect(cache.fresh(d.ino)).toBeUndefined();
      cache.learn(await a.get(d.ino));
      return a.create(d.ino, "f", { mode: FILE, uid: 0, gid: 0 });
    });
    expect(r.name).toBe("f");
    expect(cache.fresh(d.ino)).toBeUndefined();
  });

  test("forget drops one record", async () => {
    const f = await a.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    const g = await a.create(ROOT, "g", { mode: FILE, uid: 0, gid: 0 });
    cache.learn(f);
    cache.learn(g);
    cache.forget(f.ino);
    expect(cache.fresh(f.ino)).toBeUndefined();
    expect(cache.fresh(g.ino)).toBe(g);
  });
});

describe("meta cache: a mirror of whole listings", () => {
  /** The names a mirror holds of each directory, as the cache tells it. */
  function mirrored(): { lists: Map<number, Set<string>>; cache: MetaCache } {
    const lists = new Map<number, Set<string>>();
    const noop = () => {};
    const c = createMetaCache({
      store: a, paths: createPathCache(a), attrCacheMs: 60_000, skipPrefetch: () => false,
      mirror: {
        prefetched: noop, learned: noop, dropName: noop, dropInode: noop, dropDir: noop, dropAll: noop,
        listed: (dir, names) => void lists.set(dir, new Set(names)),
        listChanged: (dir, name, present) => void (present ? lists.get(dir)?.add(name) : lists.get(dir)?.delete(name)),
        unlisted: (dir) => void lists.delete(dir),
        unlistedAll: () => lists.clear(),
      },
    });
    return { lists, cache: c };
  }

  test("holds what the listing holds through every kind of change, a name going and coming back in one included", async () => {
    await a.create(ROOT, "x", { mode: FILE, uid: 0, gid: 0 });
    const m = mirrored();
    cache = m.cache;
    await listing(ROOT);
    const same = () => expect([...(m.lists.get(ROOT) ?? [])].sort()).toEqual([...cache.entries(ROOT)!.keys()].sort());
    same();
    cache.dirChanged(ROOT, ["y", 5]);
    same();
    cache.dirChanged(ROOT, ["z", 6], "y");
    same();
    // Renamed over a name it keeps (the same name goes and comes back): still there.
    cache.dirChanged(ROOT, ["z", 7], "z");
    same();
    expect(m.lists.get(ROOT)?.has("z")).toBe(true);
    cache.dirChanged(ROOT, undefined, "x");
    same();
    cache.dropListing(ROOT);
    expect(m.lists.has(ROOT)).toBe(false);
    await listing(ROOT);
    same();
    cache.resync();
    expect(m.lists.size).toBe(0);
  });
});
