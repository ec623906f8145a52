/**
 * The MetadataStore contract: what every implementation must do, run against each of them (Redis in
 * test/store-redis.test.ts, memory in test/unit/store-memory.test.ts). A store that fails here may not
 * stand in for another anywhere. After JuiceFS's pkg/meta testMeta(t, m), run against every backend.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import { RENAME_EXCHANGE, RENAME_NOREPLACE } from "../../src/fuse/types.ts";
import { XATTRS_MAX, type Created, type Invalidation, type MetadataStore, type NewInode, type TodoEntry } from "../../src/meta/store.ts";
import { errnoOf, errnoName } from "../../src/util/errno.ts";

export interface StoreHarness {
  /** A store of node "node-a" on new, empty metadata. */
  store: MetadataStore;
  /** Another client of the same metadata, as another node (its own connection). */
  open(nodeId: string): Promise<MetadataStore>;
  /** Close every store it opened and drop the metadata. */
  cleanup(): Promise<void>;
}

export type StoreFactory = () => Promise<StoreHarness>;

/** A harness over one way to open a store as a node; cleanup closes every store it opened. */
export async function harnessOf(openAs: (nodeId: string) => MetadataStore | Promise<MetadataStore>): Promise<StoreHarness> {
  const opened: MetadataStore[] = [];
  const open = async (nodeId: string) => {
    const s = await openAs(nodeId);
    opened.push(s);
    return s;
  };
  return {
    store: await open("node-a"),
    open,
    async cleanup() {
      await Promise.all(opened.map((s) => s.close()));
    },
  };
}

export interface ContractOptions {
  /** Tests this implementation is known to fail, by name: reported as todo with the bug, not run. */
  knownBugs?: Record<string, string>;
}

const ROOT = 1;
const FILE = 0o100644, DIR = 0o040755, LINK = 0o120777;
const A = "node-a";

/** The errno name a call fails with, or "ok". */
async function outcome(p: Promise<unknown>): Promise<string> {
  try {
    await p;
    return "ok";
  } catch (e) {
    const n = errnoOf(e);
    if (n === undefined) throw e;
    return errnoName(n);
  }
}

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(5);
  }
}


export function storeContract(name: string, factory: StoreFactory, o: ContractOptions = {}): void {
  let h: StoreHarness;
  let st: MetadataStore;
  const it = (title: string, fn: () => Promise<void>, timeout?: number) => {
    const bug = o.knownBugs?.[title];
    if (bug !== undefined) test.todo(`${title} [known bug: ${bug}]`, fn);
    else test(title, fn, timeout);
  };
  const file = (parent: number, n: string, extra: Partial<NewInode> = {}) => st.create(parent, n, { mode: FILE, uid: 1000, gid: 100, ...extra });
  const dir = async (parent: number, n: string) => (await st.create(parent, n, { mode: DIR, uid: 1000, gid: 100 })).ino;
  /** Every directory reachable from the root checks out; returns how many there are. */
  async function consistentTree(s: MetadataStore): Promise<number> {
    const seen = new Set<number>();
    const walk = async (ino: number): Promise<void> => {
      expect(seen.has(ino)).toBe(false);
      seen.add(ino);
      const ents = await s.listDir(ino);
      const subdirs = ents.filter((e) => e.type === DIR >> 12);
      expect((await s.get(ino)).nlink).toBe(2 + subdirs.length);
      for (const e of subdirs) {
        const r = await s.get(e.ino);
        expect([r.parent, r.name]).toEqual([ino, e.name]);
        await walk(e.ino);
      }
    };
    await walk(ROOT);
    return seen.size;
  }

  describe(`MetadataStore contract: ${name}`, () => {
    beforeEach(async () => {
      h = await factory();
      st = h.store;
      await st.init(0o755, 0, 0);
    });
    afterEach(async () => {
      await h.cleanup();
    });

    describe("namespace", () => {
      it("init makes the root directory once", async () => {
        const r = await st.get(ROOT);
        expect(r).toMatchObject({ ino: ROOT, mode: 0o040755, uid: 0, gid: 0, nlink: 2, parent: 0, name: "" });
        await st.init(0o700, 5, 5);
        expect((await st.get(ROOT)).mode).toBe(0o040755);
        expect(await st.listDir(ROOT)).toEqual([]);
      });

      it("create, get, lookup and listDir agree on a file", async () => {
        const before = await st.get(ROOT);
        const r = await file(ROOT, "f", { size: 42, mtime: 7_000_000_000n, version: 99, gen: "abcd", rdev: 0 });
        expect(r).toMatchObject({ mode: FILE, uid: 1000, gid: 100, size: 42, nlink: 1, mtime: 7_000_000_000n, atime: 7_000_000_000n, version: 99, gen: "abcd", parent: ROOT, name: "f" });
        expect(await st.get(r.ino)).toEqual(r);
        expect(await st.lookup(ROOT, "f")).toEqual(r);
        expect(await st.listDir(ROOT)).toEqual([{ name: "f", ino: r.ino, type: FILE >> 12 }]);
        const after = await st.get(ROOT);
        expect(after.nlink).toBe(2);
        expect(after.mtime > before.mtime && after.ctime > before.ctime).toBe(true);
      });

      it("a directory's times move forward with each change in it, never back: a change stamped earlier gets the last one's time plus 1 ns", async () => {
        const d = await st.create(ROOT, "times", { mode: DIR, uid: 0, gid: 0 });
        const late = 9_000_000_000_000_000_000n;
        await file(d.ino, "late", { ctime: late });
        expect(await st.get(d.ino)).toMatchObject({ mtime: late, ctime: late });
        await file(d.ino, "early", { ctime: late - 5n });
        expect(await st.get(d.ino)).toMatchObject({ mtime: late + 1n, ctime: late + 1n });
        await st.remove(d.ino, "early", false);
        expect(await st.get(d.ino)).toMatchObject({ mtime: late + 2n, ctime: late + 2n });
        // Past a run of nines the count carries.
        const nines = 9_999_999_999_999_999_999n;
        await file(d.ino, "nines", { ctime: nines });
        await file(d.ino, "after", { ctime: 1n });
        expect((await st.get(d.ino)).ctime).toBe(nines + 1n);
      });

      it("a create with the file's first data: its ctime is the one given as changed, the directory's times the create's", async () => {
        const d = await st.create(ROOT, "first", { mode: DIR, uid: 0, gid: 0 });
        const at = 8_000_000_000_000_000_000n;
        const r = await file(d.ino, "f", { ctime: at, changed: at + 500n, mtime: at + 400n, size: 4096 });
        expect(r).toMatchObject({ size: 4096, mtime: at + 400n, ctime: at + 500n });
        expect(await st.get(r.ino)).toMatchObject({ size: 4096, mtime: at + 400n, ctime: at + 500n });
        expect(await st.get(d.ino)).toMatchObject({ mtime: at, ctime: at });
      });

      it("create of a taken name: EEXIST, unless it replaces (a create written behind), which a directory still refuses", async () => {
        const old = await file(ROOT, "f", { holder: "node-b" });
        expect(await outcome(file(ROOT, "f"))).toBe("EEXIST");
        const r = await file(ROOT, "f", { holder: A, replace: "/f" });
        expect(r.replaced).toEqual({ ino: old.ino, nlink: 0, dir: false });
        expect(await st.lookup(ROOT, "f")).toMatchObject({ ino: r.ino });
        expect(await st.listDir(ROOT)).toEqual([{ name: "f", ino: r.ino, type: FILE >> 12 }]);
        expect(await (await h.open("node-b")).takeTodo()).toEqual([{ op: "rm", path: "/f", id: `${old.ino}:${old.gen}`, last: true, v: String(old.version) }]);
        expect((await file(ROOT, "g", { replace: "/g" })).replaced).toBeUndefined();
        await dir(ROOT, "d");
        expect(await outcome(file(ROOT, "d", { replace: "/d" }))).toBe("EISDIR");
        expect((await st.get(ROOT)).nlink).toBe(3);
      });

      it("a create that would replace another user's file in a sticky directory is refused as the open of that file would be (EACCES; never EEXIST, which a create without O_EXCL must not return)", async () => {
        const t = (await st.create(ROOT, "t", { mode: 0o041777, uid: 0, gid: 0 })).ino;
        await file(t, "f", { uid: 1000 });
        expect(await outcome(st.create(t, "f", { mode: FILE, uid: 2000, gid: 100, replace: "/t/f" }))).toBe("EACCES");
        expect((await st.create(t, "f", { mode: FILE, uid: 1000, gid: 100, replace: "/t/f" })).replaced).toMatchObject({ nlink: 0 });
        expect((await st.create(t, "f", { mode: FILE, uid: 0, gid: 0, replace: "/t/f" })).replaced).toMatchObject({ nlink: 0 });
      });

      it("a removal with only: made only while the name names that inode at that version (else ESTALE, nothing changed)", async () => {
        const f = await file(ROOT, "only-f");
        const g = await file(ROOT, "only-g");
        expect(await outcome(st.remove(ROOT, "only-f", false, undefined, { ino: g.ino, version: g.version }))).toBe("ESTALE");
        expect(await outcome(st.remove(ROOT, "only-f", false, undefined, { ino: f.ino, version: f.version + 1 }))).toBe("ESTALE");
        expect((await st.lookup(ROOT, "only-f")).ino).toBe(f.ino);
        expect((await st.get(f.ino)).nlink).toBe(1);
        expect((await st.remove(ROOT, "only-f", false, undefined, { ino: f.ino, version: f.version })).nlink).toBe(0);
        expect(await outcome(st.lookup(ROOT, "only-f"))).toBe("ENOENT");
      });

      it("a removal or rename in a sticky directory checks who may take the name away against what the name is now (the caller's kernel checked what it knew)", async () => {
        const t = (await st.create(ROOT, "t", { mode: 0o041777, uid: 0, gid: 0 })).ino;
        const theirs = await file(t, "theirs", { uid: 1000 });
        const mine = await file(t, "mine", { uid: 2000 });
        // Another user's file, neither the caller's nor in its directory: refused, nothing changed.
        expect(await outcome(st.rename(t, "mine", t, "theirs", 0, 2000))).toBe("EPERM");
        expect(await outcome(st.rename(t, "mine", t, "theirs", 2, 2000))).toBe("EPERM");
        expect(await outcome(st.rename(t, "theirs", t, "elsewhere", 0, 2000))).toBe("EPERM");
        expect(await outcome(st.remove(t, "theirs", false, 2000))).toBe("EPERM");
        expect((await st.lookup(t, "theirs")).ino).toBe(theirs.ino);
        expect((await st.lookup(t, "mine")).ino).toBe(mine.ino);
        expect((await st.get(theirs.ino)).nlink).toBe(1);
        // Its owner, the directory's owner, root, and the daemon's own changes (no caller) may.
        await st.rename(t, "theirs", t, "theirs2", 0, 1000);
        const u = (await st.create(ROOT, "u", { mode: 0o041777, uid: 2000, gid: 0 })).ino;
        await file(u, "x", { uid: 1000 });
        await st.rename(u, "x", u, "y", 0, 2000);
        await st.remove(u, "y", false, 2000);
        await st.rename(t, "theirs2", t, "theirs3", 0, 0);
        await st.rename(t, "mine", t, "theirs3", 0);
        expect((await st.lookup(t, "theirs3")).ino).toBe(mine.ino);
        // Not sticky: the directory's write permission is all (the kernel's to check).
        const open = await dir(ROOT, "open");
        await file(open, "a", { uid: 1000 });
        await file(open, "b", { uid: 2000 });
        await st.rename(open, "b", open, "a", 0, 2000);
        await st.remove(open, "a", false, 2000);
      });

      it("a new directory has two links and gives its parent one", async () => {
        const d = await dir(ROOT, "d");
        expect((await st.get(d)).nlink).toBe(2);
        expect((await st.get(ROOT)).nlink).toBe(3);
        expect(await st.listDir(ROOT)).toEqual([{ name: "d", ino: d, type: DIR >> 12 }]);
      });

      it("a symlink keeps its target, any bytes", async () => {
        const target = "../x/\u00e9\u{1f600} y";
        const r = await st.create(ROOT, "l", { mode: LINK, uid: 0, gid: 0, target });
        expect(r.target).toBe(target);
        expect((await st.lookup(ROOT, "l")).target).toBe(target);
        expect((await file(ROOT, "f")).target).toBeUndefined();
      });

      it("new versions and generations differ from file to file", async () => {
        const [a, b] = [await file(ROOT, "a"), await file(ROOT, "b")];
        expect(a.version).not.toBe(b.version);
        expect(a.gen).not.toBe(b.gen);
        expect(a.gen).not.toBe("");
      });

      it("names are any bytes but / and NUL", async () => {
        const names = [" ", "a b", "\n", "\u00fc", "x".repeat(255), "..."];
        for (const n of names) await file(ROOT, n);
        expect((await st.listDir(ROOT)).map((e) => e.name).sort()).toEqual([...names].sort());
      });

      it("createMany makes each as create would, one after another; a refused one is that create's error and the others are made", async () => {
        const f = await file(ROOT, "taken", { holder: "node-b" });
        const at = 8_000_000_000_000_000_000n;
        const made = async (i: number, r: Created | Error | undefined) => (r instanceof Error ? errnoName(errnoOf(r) ?? -1) : `${i}:${(await st.lookup(r!.parent, r!.name)).ino === r!.ino ? "listed" : "not listed"}`);
        const out = await st.createMany([
          { parent: ROOT, name: "m1", init: { mode: FILE, uid: 1000, gid: 100, size: 10, mtime: at, changed: at } },
          { parent: ROOT, name: "taken", init: { mode: FILE, uid: 1000, gid: 100 } },
          { parent: 12345, name: "x", init: { mode: FILE, uid: 1000, gid: 100 } },
          { parent: f.ino, name: "x", init: { mode: FILE, uid: 1000, gid: 100 } },
          { parent: ROOT, name: "m1", init: { mode: FILE, uid: 1000, gid: 100 } },
          { parent: ROOT, name: "taken", init: { mode: FILE, uid: 1000, gid: 100, holder: A, replace: "/taken" } },
          { parent: ROOT, name: "m2", init: { mode: DIR, uid: 0, gid: 0 } },
        ]);
        expect(await Promise.all(out.map((r, i) => made(i, r)))).toEqual(["0:listed", "EEXIST", "ENOENT", "ENOTDIR", "EEXIST", "5:listed", "6:listed"]);
        expect(await st.get((out[0] as Created).ino)).toMatchObject({ size: 10, mtime: at, ctime: at });
        expect((out[5] as Created).replaced).toEqual({ ino: f.ino, nlink: 0, dir: false });
        expect((await st.get(ROOT)).nlink).toBe(3);
        expect((await st.listDir(ROOT)).map((e) => e.name).sort()).toEqual(["m1", "m2", "taken"]);
        expect(await st.createMany([])).toEqual([]);
      });

      it("create refuses: EEXIST, ENOENT (no parent), ENOTDIR (parent a file)", async () => {
        const f = await file(ROOT, "f");
        expect(await outcome(file(ROOT, "f"))).toBe("EEXIST");
        expect(await outcome(dir(ROOT, "f"))).toBe("EEXIST");
        expect(await outcome(file(12345, "g"))).toBe("ENOENT");
        expect(await outcome(file(f.ino, "g"))).toBe("ENOTDIR");
        expect(await st.listDir(ROOT)).toHaveLength(1);
      });

      it("a set-group-ID directory gives its group to new entries and its bit to new directories", async () => {
        const d = (await st.create(ROOT, "sg", { mode: DIR | 0o2000, uid: 0, gid: 77 })).ino;
        const f = await file(d, "f");
        const sub = await st.create(d, "sub", { mode: DIR, uid: 1000, gid: 100 });
        expect(f.gid).toBe(77);
        expect(f.mode).toBe(FILE);
        expect(sub.gid).toBe(77);
        expect(sub.mode).toBe(DIR | 0o2000);
        expect((await st.get(sub.ino)).mode).toBe(DIR | 0o2000);
      });

      it("get and lookup of what is not there: ENOENT; getMany leaves gaps", async () => {
        const f = await file(ROOT, "f");
        expect(await outcome(st.get(999))).toBe("ENOENT");
        expect(await outcome(st.lookup(ROOT, "nope"))).toBe("ENOENT");
        expect(await outcome(st.lookup(f.ino, "x"))).toBe("ENOENT");
        const many = await st.getMany([f.ino, 999, ROOT]);
        expect(many.map((r) => r?.ino)).toEqual([f.ino, undefined, ROOT]);
      });

      it("listDir of a directory that is not there: ENOENT", async () => {
        const d = await dir(ROOT, "d");
        await st.remove(ROOT, "d", true);
        expect(await outcome(st.listDir(d))).toBe("ENOENT");
        expect(await outcome(st.listDir(999))).toBe("ENOENT");
      });

      it("unlink of a file's only name leaves it orphaned until purged", async () => {
        const f = await file(ROOT, "f");
        expect(await st.remove(ROOT, "f", false)).toEqual({ ino: f.ino, nlink: 0, dir: false, path: "/f" });
        expect(await outcome(st.lookup(ROOT, "f"))).toBe("ENOENT");
        expect(await st.listDir(ROOT)).toEqual([]);
        expect(await st.orphans()).toEqual([f.ino]);
        expect((await st.get(f.ino)).nlink).toBe(0);
        await st.purge(f.ino);
        expect(await outcome(st.get(f.ino))).toBe("ENOENT");
        expect(await st.orphans()).toEqual([]);
      });

      it("a purged file is remembered as deleted; one still named, or never made, is not", async () => {
        const f = await file(ROOT, "f");
        const g = await file(ROOT, "g");
        expect(await st.deleted([f.ino, g.ino, 999])).toEqual([false, false, false]);
        await st.remove(ROOT, "f", false);
        expect(await st.deleted([f.ino])).toEqual([false]);
        await st.purge(f.ino);
        await st.purge(g.ino);
        expect(await st.deleted([f.ino, g.ino, 999])).toEqual([true, false, false]);
        expect(await st.deleted([])).toEqual([]);
      });

      it("a removed directory is remembered as deleted, and one a rename replaced", async () => {
        const d = await dir(ROOT, "d");
        const e = await dir(ROOT, "e");
        const x = await dir(ROOT, "x");
        expect(await st.deleted([d, e, x])).toEqual([false, false, false]);
        await st.remove(ROOT, "d", true);
        await st.rename(ROOT, "x", ROOT, "e", 0);
        expect(await st.deleted([d, e, x])).toEqual([true, true, false]);
      });

      it("remove refuses: ENOENT, EISDIR, ENOTDIR, ENOTEMPTY", async () => {
        const d = await dir(ROOT, "d");
        await file(d, "f");
        expect(await outcome(st.remove(ROOT, "x", false))).toBe("ENOENT");
        expect(await outcome(st.remove(ROOT, "d", false))).toBe("EISDIR");
        expect(await outcome(st.remove(d, "f", true))).toBe("ENOTDIR");
        expect(await outcome(st.remove(ROOT, "d", true))).toBe("ENOTEMPTY");
        expect((await st.listDir(d)).map((e) => e.name)).toEqual(["f"]);
      });

      it("rmdir of an empty directory drops it and its parent's link", async () => {
        const d = await dir(ROOT, "d");
        expect(await st.remove(ROOT, "d", true)).toMatchObject({ ino: d, nlink: 0, dir: true, path: "/d" });
        expect(await outcome(st.get(d))).toBe("ENOENT");
        expect((await st.get(ROOT)).nlink).toBe(2);
        expect(await st.orphans()).toEqual([]);
      });

      it("purge leaves a file that still has names alone", async () => {
        const f = await file(ROOT, "f");
        await st.purge(f.ino);
        expect((await st.get(f.ino)).nlink).toBe(1);
      });

      it("setAttrs changes what it is given and ctime; ENOENT when gone", async () => {
        const f = await file(ROOT, "f");
        const r = await st.setAttrs(f.ino, { mode: FILE | 0o4711, uid: 5, gid: 6, atime: 11n, mtime: 22n });
        expect(r).toMatchObject({ mode: FILE | 0o4711, uid: 5, gid: 6, atime: 11n, mtime: 22n, size: 0, version: f.version });
        expect(r.ctime >= f.ctime).toBe(true);
        expect(await st.get(f.ino)).toEqual(r);
        expect((await st.setAttrs(f.ino, {})).uid).toBe(5);
        expect(await outcome(st.setAttrs(999, { uid: 1 }))).toBe("ENOENT");
      });

      it("setData sets size, times and version and makes the writer the only holder", async () => {
        const f = await file(ROOT, "f", { holder: "node-b" });
        await st.addCachedCopies("node-c", 1, [{ ino: f.ino, version: f.version }]);
        const r = await st.setData(f.ino, 1234, 50n, 60n, "node-c", "/f", { version: 777 });
        expect(r).toMatchObject({ size: 1234, mtime: 50n, ctime: 60n, version: 777 });
        expect(await st.locations(f.ino)).toEqual(new Map([["node-c", 777]]));
        expect((await st.holders(f.ino)).cached.size).toBe(0);
        const again = await st.setData(f.ino, 1, 70n, 70n, "node-c", "/f");
        expect(again.version).not.toBe(777);
        expect(await st.locations(f.ino)).toEqual(new Map([["node-c", again.version]]));
        expect(await outcome(st.setData(999, 1, 1n, 1n, A, "/x"))).toBe("ENOENT");
      });

      it("a given inode number is the one used", async () => {
        const first = await st.reserveInodes(10);
        const r = await file(ROOT, "f", { ino: first + 3 });
        expect(r.ino).toBe(first + 3);
        expect((await st.lookup(ROOT, "f")).ino).toBe(first + 3);
      });
    });

    describe("hard links", () => {
      it("link adds a name, a link, and the name shows in extraNames", async () => {
        const d = await dir(ROOT, "d");
        const f = await file(ROOT, "f");
        const r = await st.link(f.ino, d, "g");
        expect(r.record).toMatchObject({ ino: f.ino, nlink: 2, parent: ROOT, name: "f" });
        expect([r.from, r.to]).toEqual(["/f", "/d/g"]);
        expect((await st.lookup(d, "g")).ino).toBe(f.ino);
        expect(await st.listDir(d)).toEqual([{ name: "g", ino: f.ino, type: FILE >> 12 }]);
        expect(await st.extraNames(f.ino)).toEqual([{ parent: d, name: "g" }]);
      });

      it("link refuses: ENOENT (no inode, no parent), EPERM (a directory), EEXIST, ENOTDIR", async () => {
        const f = await file(ROOT, "f");
        const d = await dir(ROOT, "d");
        expect(await outcome(st.link(999, ROOT, "x"))).toBe("ENOENT");
        expect(await outcome(st.link(d, ROOT, "x"))).toBe("EPERM");
        expect(await outcome(st.link(f.ino, ROOT, "d"))).toBe("EEXIST");
        expect(await outcome(st.link(f.ino, 999, "x"))).toBe("ENOENT");
        expect(await outcome(st.link(f.ino, f.ino, "x"))).toBe("ENOTDIR");
        expect((await st.get(f.ino)).nlink).toBe(1);
      });

      it("unlinking the primary name makes another name primary", async () => {
        const d = await dir(ROOT, "d");
        const f = await file(ROOT, "f");
        await st.link(f.ino, d, "g");
        expect(await st.remove(ROOT, "f", false)).toEqual({ ino: f.ino, nlink: 1, dir: false, path: "/f" });
        expect(await st.get(f.ino)).toMatchObject({ parent: d, name: "g", nlink: 1 });
        expect(await st.extraNames(f.ino)).toEqual([]);
        expect(await st.orphans()).toEqual([]);
      });

      it("unlinking an extra name keeps the primary one", async () => {
        const f = await file(ROOT, "f");
        await st.link(f.ino, ROOT, "g");
        await st.link(f.ino, ROOT, "h");
        expect((await st.remove(ROOT, "g", false)).nlink).toBe(2);
        expect(await st.get(f.ino)).toMatchObject({ parent: ROOT, name: "f", nlink: 2 });
        expect(await st.extraNames(f.ino)).toEqual([{ parent: ROOT, name: "h" }]);
      });

      it("renaming an extra name moves it in extraNames", async () => {
        const f = await file(ROOT, "f");
        await st.link(f.ino, ROOT, "g");
        await st.rename(ROOT, "g", ROOT, "g2", 0);
        expect(await st.extraNames(f.ino)).toEqual([{ parent: ROOT, name: "g2" }]);
        expect((await st.get(f.ino)).name).toBe("f");
      });

      it("linking an orphan takes it off the orphans list", async () => {
        const f = await file(ROOT, "f");
        await st.remove(ROOT, "f", false);
        await st.link(f.ino, ROOT, "back");
        expect(await st.orphans()).toEqual([]);
        expect((await st.get(f.ino)).nlink).toBe(1);
      });
    });

    describe("rename", () => {
      it("within a directory and across directories; the primary name follows", async () => {
        const d = await dir(ROOT, "d");
        const f = await file(ROOT, "f");
        expect(await st.rename(ROOT, "f", ROOT, "g", 0)).toEqual({ ino: f.ino, from: "/f", to: "/g" });
        expect(await st.get(f.ino)).toMatchObject({ parent: ROOT, name: "g" });
        expect(await st.rename(ROOT, "g", d, "h", 0)).toEqual({ ino: f.ino, from: "/g", to: "/d/h" });
        expect(await st.get(f.ino)).toMatchObject({ parent: d, name: "h" });
        expect((await st.listDir(ROOT)).map((e) => e.name)).toEqual(["d"]);
        expect(await st.listDir(d)).toEqual([{ name: "h", ino: f.ino, type: FILE >> 12 }]);
      });

      it("a directory moves with its subtree and its parents' links follow", async () => {
        const a = await dir(ROOT, "a");
        const b = await dir(ROOT, "b");
        const c = await dir(a, "c");
        const f = await file(c, "f");
        await st.rename(a, "c", b, "c", 0);
        expect((await st.get(a)).nlink).toBe(2);
        expect((await st.get(b)).nlink).toBe(3);
        expect((await st.lookup(c, "f")).ino).toBe(f.ino);
        expect(await st.get(c)).toMatchObject({ parent: b, name: "c", nlink: 2 });
        expect(await consistentTree(st)).toBe(4);
      });

      it("over a file: the file loses that name and is returned as replaced", async () => {
        const f = await file(ROOT, "f");
        const g = await file(ROOT, "g");
        expect(await st.rename(ROOT, "f", ROOT, "g", 0)).toEqual({ ino: f.ino, replaced: { ino: g.ino, nlink: 0, dir: false }, from: "/f", to: "/g" });
        expect(await st.listDir(ROOT)).toEqual([{ name: "g", ino: f.ino, type: FILE >> 12 }]);
        expect(await st.orphans()).toEqual([g.ino]);
      });

      it("over a hard link of another file with more names: that file keeps its other names", async () => {
        const f = await file(ROOT, "f");
        const g = await file(ROOT, "g");
        await st.link(g.ino, ROOT, "g2");
        const r = await st.rename(ROOT, "f", ROOT, "g", 0);
        expect(r.replaced).toEqual({ ino: g.ino, nlink: 1, dir: false });
        expect(await st.get(g.ino)).toMatchObject({ parent: ROOT, name: "g2", nlink: 1 });
        expect(await st.orphans()).toEqual([]);
      });

      it("over an empty directory: it is dropped with its parent's link", async () => {
        const a = await dir(ROOT, "a");
        const b = await dir(ROOT, "b");
        expect(await st.rename(ROOT, "a", ROOT, "b", 0)).toMatchObject({ ino: a, replaced: { ino: b, nlink: 0, dir: true }, from: "/a", to: "/b" });
        expect(await outcome(st.get(b))).toBe("ENOENT");
        expect((await st.get(ROOT)).nlink).toBe(3);
        expect(await consistentTree(st)).toBe(2);
      });

      it("onto another name of the same file does nothing", async () => {
        const f = await file(ROOT, "f");
        await st.link(f.ino, ROOT, "g");
        expect(await st.rename(ROOT, "f", ROOT, "g", 0)).toEqual({ ino: f.ino });
        expect((await st.listDir(ROOT)).map((e) => e.name).sort()).toEqual(["f", "g"]);
        expect((await st.get(f.ino)).nlink).toBe(2);
        expect(await st.rename(ROOT, "f", ROOT, "f", 0)).toEqual({ ino: f.ino });
      });

      it("refuses: ENOENT (source, target parent), ENOTDIR, EISDIR, ENOTEMPTY, EINVAL (into itself)", async () => {
        const a = await dir(ROOT, "a");
        const b = await dir(a, "b");
        const full = await dir(ROOT, "full");
        await file(full, "x");
        const f = await file(ROOT, "f");
        expect(await outcome(st.rename(ROOT, "none", ROOT, "y", 0))).toBe("ENOENT");
        expect(await outcome(st.rename(ROOT, "f", 999, "y", 0))).toBe("ENOENT");
        expect(await outcome(st.rename(ROOT, "f", f.ino, "y", 0))).toBe("ENOTDIR");
        expect(await outcome(st.rename(ROOT, "a", ROOT, "f", 0))).toBe("ENOTDIR");
        expect(await outcome(st.rename(ROOT, "f", ROOT, "a", 0))).toBe("EISDIR");
        expect(await outcome(st.rename(ROOT, "a", ROOT, "full", 0))).toBe("ENOTEMPTY");
        expect(await outcome(st.rename(ROOT, "a", a, "a2", 0))).toBe("EINVAL");
        expect(await outcome(st.rename(ROOT, "a", b, "a2", 0))).toBe("EINVAL");
        expect(await consistentTree(st)).toBe(4);
        expect((await st.listDir(ROOT)).map((e) => e.name).sort()).toEqual(["a", "f", "full"]);
      });

      it("RENAME_NOREPLACE: EEXIST when the target exists, a plain rename when not", async () => {
        await file(ROOT, "f");
        const g = await file(ROOT, "g");
        expect(await outcome(st.rename(ROOT, "f", ROOT, "g", RENAME_NOREPLACE))).toBe("EEXIST");
        expect((await st.lookup(ROOT, "g")).ino).toBe(g.ino);
        expect(await outcome(st.rename(ROOT, "f", ROOT, "h", RENAME_NOREPLACE))).toBe("ok");
      });

      it("RENAME_EXCHANGE: ENOENT without a target; swaps a file and a directory across directories", async () => {
        const a = await dir(ROOT, "a");
        const b = await dir(ROOT, "b");
        const f = await file(a, "x");
        const d = await dir(b, "y");
        expect(await outcome(st.rename(a, "x", b, "none", RENAME_EXCHANGE))).toBe("ENOENT");
        expect(await st.rename(a, "x", b, "y", RENAME_EXCHANGE)).toMatchObject({ ino: f.ino, exchanged: d, from: "/a/x", to: "/b/y" });
        expect((await st.lookup(a, "x")).ino).toBe(d);
        expect((await st.lookup(b, "y")).ino).toBe(f.ino);
        expect(await st.get(d)).toMatchObject({ parent: a, name: "x" });
        expect(await st.get(f.ino)).toMatchObject({ parent: b, name: "y" });
        expect((await st.get(a)).nlink).toBe(3);
        expect((await st.get(b)).nlink).toBe(2);
        expect(await consistentTree(st)).toBe(4);
      });

      it("RENAME_EXCHANGE of a directory with one of its ancestors: EINVAL", async () => {
        const a = await dir(ROOT, "a");
        const b = await dir(a, "b");
        await file(b, "f");
        // Swapping /a/b/f with /a would put a inside its own child b.
        expect(await outcome(st.rename(b, "f", ROOT, "a", RENAME_EXCHANGE))).toBe("EINVAL");
        expect(await consistentTree(st)).toBe(3);
      });

      it("RENAME_EXCHANGE of two directories, one beneath the other: EINVAL either way round", async () => {
        const a = await dir(ROOT, "a");
        const b = await dir(a, "b");
        const c = await dir(b, "c");
        expect(await outcome(st.rename(b, "c", ROOT, "a", RENAME_EXCHANGE))).toBe("EINVAL");
        expect(await outcome(st.rename(ROOT, "a", b, "c", RENAME_EXCHANGE))).toBe("EINVAL");
        expect((await st.get(c)).parent).toBe(b);
        expect(await consistentTree(st)).toBe(4);
      });
    });

    describe("inode numbers", () => {
      it("reserveInodes hands out consecutive blocks that never overlap creates", async () => {
        const f = await file(ROOT, "f");
        const r1 = await st.reserveInodes(100);
        const r2 = await st.reserveInodes(5);
        expect(r1).toBeGreaterThan(f.ino);
        expect(r2).toBe(r1 + 100);
        const g = await file(ROOT, "g");
        expect(g.ino).toBe(r2 + 5);
        expect(await st.inodeCounter()).toEqual({ counter: g.ino, handedOut: g.ino, wentBack: false });
      });

      it("a create behind numbers the caller saw jumps past them and says so once", async () => {
        const r = await file(ROOT, "f", { above: 5000 });
        expect(r.ino).toBeGreaterThan(5000);
        expect(await st.inodeCounter()).toMatchObject({ counter: r.ino, wentBack: true });
        expect((await st.inodeCounter()).wentBack).toBe(false);
        const g = await file(ROOT, "g", { above: 10 });
        expect(g.ino).toBe(r.ino + 1);
        expect((await st.inodeCounter()).wentBack).toBe(false);
      });

      it("raiseInodeCounter raises, never lowers", async () => {
        await st.raiseInodeCounter(1000);
        expect((await st.inodeCounter()).counter).toBe(1000);
        await st.raiseInodeCounter(10);
        expect((await st.inodeCounter()).counter).toBe(1000);
        expect((await file(ROOT, "f")).ino).toBe(1001);
      });

      it("handedOut is per client; the counter is shared", async () => {
        const b = await h.open("node-b");
        const first = await b.reserveInodes(10);
        expect(await b.inodeCounter()).toEqual({ counter: first + 9, handedOut: first + 9, wentBack: false });
        expect(await st.inodeCounter()).toEqual({ counter: first + 9, handedOut: 0, wentBack: false });
      });

      it("instanceId is stable and the same for every client", async () => {
        const b = await h.open("node-b");
        const id = await st.instanceId();
        expect(id).not.toBe("");
        expect(await st.instanceId()).toBe(id);
        expect(await b.instanceId()).toBe(id);
      });
    });

    describe("extended attributes", () => {
      it("a file's names and values take at most XATTRS_MAX bytes (a name counts its NUL): one past is refused (ENOSPC), so its list always fits the kernel's 64 KiB; a replace or removal makes room", async () => {
        const f = await file(ROOT, "f");
        const name = (i: number) => `user.${String(i).padStart(245, "n")}`;
        // 250-byte names, each with a 6-byte value: 257 bytes each; 255 of them fit, the 256th does not.
        for (let i = 0; i < 255; i++) await st.setXattr(f.ino, name(i), new Uint8Array(6), 0);
        expect(await outcome(st.setXattr(f.ino, name(255), new Uint8Array(6), 0))).toBe("ENOSPC");
        expect(await st.getXattr(f.ino, name(255))).toBeUndefined();
        const list = await st.listXattr(f.ino);
        expect(list.length).toBe(255);
        expect(list.reduce((n, x) => n + Buffer.byteLength(x) + 1, 0)).toBeLessThanOrEqual(XATTRS_MAX);
        // A replace counts the value it replaces: a shorter one fits, a longer one past the bound does not.
        await st.setXattr(f.ino, name(0), new Uint8Array(0), 0);
        expect(await outcome(st.setXattr(f.ino, name(1), new Uint8Array(6 + XATTRS_MAX - 255 * 257 + 7), 0))).toBe("ENOSPC");
        expect(await st.getXattr(f.ino, name(1))).toEqual(new Uint8Array(6));
        await st.removeXattr(f.ino, name(2));
        await st.setXattr(f.ino, name(255), new Uint8Array(6), 0);
        // One value of the largest size the kernel passes fits a file alone; another file has its own room.
        const g = await file(ROOT, "g");
        await st.setXattr(g.ino, "user.big", new Uint8Array(XATTRS_MAX - "user.big".length - 1), 0);
        expect(await outcome(st.setXattr(g.ino, "user.x", new Uint8Array(0), 0))).toBe("ENOSPC");
      });

      it("set, get, list, remove; binary values", async () => {
        const f = await file(ROOT, "f");
        const bin = new Uint8Array([0, 255, 1, 0, 128]);
        await st.setXattr(f.ino, "user.a", bin, 0);
        await st.setXattr(f.ino, "user.b", new Uint8Array(), 0);
        expect(await st.getXattr(f.ino, "user.a")).toEqual(bin);
        expect(await st.getXattr(f.ino, "user.b")).toEqual(new Uint8Array());
        expect(await st.getXattr(f.ino, "user.none")).toBeUndefined();
        expect((await st.listXattr(f.ino)).sort()).toEqual(["user.a", "user.b"]);
        await st.setXattr(f.ino, "user.a", new Uint8Array([7]), 0);
        expect(await st.getXattr(f.ino, "user.a")).toEqual(new Uint8Array([7]));
        const before = (await st.get(f.ino)).ctime;
        await st.removeXattr(f.ino, "user.a");
        expect(await st.listXattr(f.ino)).toEqual(["user.b"]);
        expect((await st.get(f.ino)).ctime > before).toBe(true);
      });

      it("XATTR_CREATE: EEXIST; XATTR_REPLACE: ENODATA; remove of none: ENODATA; no inode (set or remove): ENOENT", async () => {
        const f = await file(ROOT, "f");
        await st.setXattr(f.ino, "user.a", new Uint8Array([1]), 1);
        expect(await outcome(st.setXattr(f.ino, "user.a", new Uint8Array([2]), 1))).toBe("EEXIST");
        expect(await outcome(st.setXattr(f.ino, "user.b", new Uint8Array([2]), 2))).toBe("ENODATA");
        expect(await outcome(st.setXattr(f.ino, "user.a", new Uint8Array([3]), 2))).toBe("ok");
        expect(await st.getXattr(f.ino, "user.a")).toEqual(new Uint8Array([3]));
        expect(await outcome(st.removeXattr(f.ino, "user.b"))).toBe("ENODATA");
        expect(await outcome(st.setXattr(999, "user.a", new Uint8Array([1]), 0))).toBe("ENOENT");
        expect(await outcome(st.removeXattr(999, "user.a"))).toBe("ENOENT");
      });

      it("they go with the inode", async () => {
        const f = await file(ROOT, "f");
        await st.setXattr(f.ino, "user.a", new Uint8Array([1]), 0);
        await st.remove(ROOT, "f", false);
        await st.purge(f.ino);
        expect(await st.listXattr(f.ino)).toEqual([]);
        expect(await st.getXattr(f.ino, "user.a")).toBeUndefined();
      });
    });

    describe("holders and cached copies", () => {
      it("the creating holder holds the first version; heldBy checks the version", async () => {
        const f = await file(ROOT, "f", { holder: "node-b", version: 5 });
        expect(await st.locations(f.ino)).toEqual(new Map([["node-b", 5]]));
        expect(await st.heldBy("node-b", [{ ino: f.ino, version: 5 }, { ino: f.ino, version: 6 }, { ino: 999, version: 5 }])).toEqual([true, false, false]);
        expect(await st.heldBy("node-c", [{ ino: f.ino, version: 5 }])).toEqual([false]);
        expect(await st.heldBy("node-b", [])).toEqual([]);
        expect(await st.locations((await file(ROOT, "g")).ino)).toEqual(new Map());
      });

      it("cached copies are listed only at the current version, and dropped only at theirs", async () => {
        const f = await file(ROOT, "f", { holder: "node-b", version: 5 });
        expect(await st.addCachedCopies("node-c", 1234, [{ ino: f.ino, version: 5 }, { ino: f.ino, version: 4 }, { ino: 999, version: 5 }])).toBe(1);
        expect(await st.holders(f.ino)).toEqual({ data: new Map([["node-b", 5]]), cached: new Map([["node-c", { version: 5, startedAt: 1234 }]]) });
        await st.dropCachedCopy(f.ino, "node-c", 4);
        expect((await st.holders(f.ino)).cached.size).toBe(1);
        await st.dropCachedCopy(f.ino, "node-c", 5);
        expect((await st.holders(f.ino)).cached.size).toBe(0);
      });

      it("recordAndHolders: the record and holders get and holders give, in one call; ENOENT for no record", async () => {
        const f = await file(ROOT, "f", { holder: "node-b", version: 5 });
        await st.addCachedCopies("node-c", 77, [{ ino: f.ino, version: 5 }]);
        expect(await st.recordAndHolders(f.ino)).toEqual({ r: await st.get(f.ino), holders: await st.holders(f.ino) });
        const empty = await file(ROOT, "g");
        expect(await st.recordAndHolders(empty.ino)).toEqual({ r: await st.get(empty.ino), holders: { data: new Map(), cached: new Map() } });
        expect(await outcome(st.recordAndHolders(999_999))).toBe("ENOENT");
      });

      it("recordsAndHolders: recordAndHolders of each, in order, undefined where there is no record", async () => {
        const f = await file(ROOT, "f", { holder: "node-b", version: 5 });
        await st.addCachedCopies("node-c", 77, [{ ino: f.ino, version: 5 }]);
        const g = await file(ROOT, "g");
        expect(await st.recordsAndHolders([g.ino, 999_999, f.ino])).toEqual([await st.recordAndHolders(g.ino), undefined, await st.recordAndHolders(f.ino)]);
        expect(await st.recordsAndHolders([])).toEqual([]);
      });
    });

    describe("todo lists", () => {
      it("unlink tells the other holders (with the file's identity), not the origin", async () => {
        const f = await file(ROOT, "f", { holder: "node-b" });
        const b = await h.open("node-b");
        await st.remove(ROOT, "f", false);
        // The last name, and the version node-b holds: it may keep the bytes for readers elsewhere.
        expect(await b.takeTodo()).toEqual([{ op: "rm", path: "/f", id: `${f.ino}:${f.gen}`, last: true, v: String(f.version) }]);
        expect(await b.takeTodo()).toEqual([]);
        expect(await st.takeTodo()).toEqual([]);
      });

      it("todoWaiting: whether the node's list holds changes not yet taken", async () => {
        const b = await h.open("node-b");
        await file(ROOT, "f", { holder: "node-b" });
        expect(await b.todoWaiting()).toBe(false);
        await st.remove(ROOT, "f", false);
        expect(await b.todoWaiting()).toBe(true);
        await b.takeTodo();
        expect(await b.todoWaiting()).toBe(false);
      });

      it("unlink of one of two names is not the last", async () => {
        const f = await file(ROOT, "f", { holder: "node-b" });
        await st.link(f.ino, ROOT, "g");
        const b = await h.open("node-b");
        await b.takeTodo();
        expect(await st.remove(ROOT, "g", false)).toMatchObject({ ino: f.ino, nlink: 1, dir: false });
        expect((await b.takeTodo()).map((e) => ("last" in e ? e.last : undefined))).toEqual([false]);
      });

      it("unlink tells the origin the version it held (none when it held nothing)", async () => {
        const f = await file(ROOT, "f", { holder: A });
        expect((await st.remove(ROOT, "f", false)).held).toBe(f.version);
        await file(ROOT, "g", { holder: "node-b" });
        expect((await st.remove(ROOT, "g", false)).held).toBeUndefined();
      });

      it("the origin is told of its own renames (its disk follows from its list), not of its unlinks", async () => {
        const f = await file(ROOT, "f", { holder: A });
        expect((await st.rename(ROOT, "f", ROOT, "g", 0)).queued).toBe(true);
        // Its disk may not have the file at /g until it takes the move.
        expect(await st.remove(ROOT, "g", false)).toMatchObject({ path: "/g", behind: true });
        expect(await st.takeTodo()).toEqual([{ op: "mv", from: "/f", to: "/g", id: `${f.ino}:${f.gen}` }]);
        await file(ROOT, "h", { holder: A });
        expect((await st.remove(ROOT, "h", false)).behind).toBeUndefined();
        const other = await file(ROOT, "o", { holder: "node-b" });
        expect((await st.rename(ROOT, "o", ROOT, "p", 0)).queued).toBeUndefined();
        expect(await st.takeTodo()).toEqual([]);
        expect(other.ino).toBeGreaterThan(ROOT);
      });

      it("a directory's rmdir and rename tell every known node, the origin too", async () => {
        for (const n of [A, "node-b", "node-c"]) await st.registerNode({ id: n, address: `${n}:1`, startedAt: 1 }, 60_000);
        await dir(ROOT, "d");
        await dir(ROOT, "e");
        expect((await st.rename(ROOT, "d", ROOT, "d2", 0)).queued).toBe(true);
        expect((await st.remove(ROOT, "e", true)).queued).toBe(true);
        const want: TodoEntry[] = [{ op: "mv", from: "/d", to: "/d2" }, { op: "rmdir", path: "/e" }];
        for (const n of ["node-b", "node-c", A]) expect(await (await h.open(n)).takeTodo()).toEqual(want);
      });

      it("paths queued are the namespace's at the change, in the order of the changes", async () => {
        await st.registerNode({ id: "node-b", address: "node-b:1", startedAt: 1 }, 60_000);
        const d = await dir(ROOT, "d");
        const f = await file(d, "f", { holder: "node-b" });
        await st.rename(ROOT, "d", ROOT, "e", 0);
        expect(await st.rename(d, "f", d, "g", 0)).toMatchObject({ from: "/e/f", to: "/e/g" });
        await dir(d, "sub");
        await st.rename(ROOT, "e", ROOT, "d", 0);
        expect(await st.remove(d, "g", false)).toMatchObject({ path: "/d/g" });
        await st.remove(d, "sub", true);
        const id = `${f.ino}:${f.gen}`;
        expect(await (await h.open("node-b")).takeTodo()).toEqual([
          { op: "mv", from: "/d", to: "/e" },
          { op: "mv", from: "/e/f", to: "/e/g", id },
          { op: "mv", from: "/e", to: "/d" },
          { op: "rm", path: "/d/g", id, last: true, v: String(f.version) },
          { op: "rmdir", path: "/d/sub" },
        ]);
      });

      it("a file's rename and link tell its holders", async () => {
        const f = await file(ROOT, "f", { holder: "node-b" });
        await st.rename(ROOT, "f", ROOT, "g", 0);
        await st.link(f.ino, ROOT, "h");
        const id = `${f.ino}:${f.gen}`;
        expect(await (await h.open("node-b")).takeTodo()).toEqual([{ op: "mv", from: "/f", to: "/g", id }, { op: "link", from: "/g", to: "/h", id }]);
      });

      it("rename over a file: its holders remove it, the source's holders move theirs", async () => {
        const f = await file(ROOT, "f", { holder: "node-b" });
        const g = await file(ROOT, "g", { holder: "node-c" });
        await st.rename(ROOT, "f", ROOT, "g", 0);
        expect(await (await h.open("node-c")).takeTodo()).toEqual([{ op: "rm", path: "/g", id: `${g.ino}:${g.gen}`, last: true, v: String(g.version) }]);
        expect(await (await h.open("node-b")).takeTodo()).toEqual([{ op: "mv", from: "/f", to: "/g", id: `${f.ino}:${f.gen}` }]);
      });

      it("rename over a file the origin holds: the origin's removal is queued before its move, in order", async () => {
        const f = await file(ROOT, "f", { holder: A });
        const g = await file(ROOT, "g", { holder: A });
        expect((await st.rename(ROOT, "f", ROOT, "g", 0)).queued).toBe(true);
        expect(await st.takeTodo()).toEqual([
          { op: "rm", path: "/g", id: `${g.ino}:${g.gen}`, last: true, v: String(g.version) },
          { op: "mv", from: "/f", to: "/g", id: `${f.ino}:${f.gen}` },
        ]);
      });

      it("new data tells the other holders to drop their copy", async () => {
        const f = await file(ROOT, "f", { holder: "node-b" });
        await st.setData(f.ino, 10, 1n, 1n, "node-c", "/f");
        expect(await (await h.open("node-b")).takeTodo()).toEqual([{ op: "drop", path: "/f", ino: f.ino, id: `${f.ino}:${f.gen}` }]);
        expect(await (await h.open("node-c")).takeTodo()).toEqual([]);
      });

      it("RENAME_EXCHANGE of two files: the holders of each swap", async () => {
        await file(ROOT, "f", { holder: "node-b" });
        await file(ROOT, "g", { holder: "node-c" });
        await st.rename(ROOT, "f", ROOT, "g", RENAME_EXCHANGE);
        const swap: TodoEntry = { op: "swap", from: "/f", to: "/g" };
        expect(await (await h.open("node-b")).takeTodo()).toEqual([swap]);
        expect(await (await h.open("node-c")).takeTodo()).toEqual([swap]);
        expect(await st.takeTodo()).toEqual([]);
        await file(ROOT, "a", { holder: A });
        await file(ROOT, "b");
        expect((await st.rename(ROOT, "a", ROOT, "b", RENAME_EXCHANGE)).queued).toBe(true);
        expect(await st.takeTodo()).toEqual([{ op: "swap", from: "/a", to: "/b" }]);
      });

      it("RENAME_EXCHANGE of two files held by the same node queues one swap", async () => {
        await file(ROOT, "f", { holder: "node-b" });
        await file(ROOT, "g", { holder: "node-b" });
        await st.rename(ROOT, "f", ROOT, "g", RENAME_EXCHANGE);
        expect(await (await h.open("node-b")).takeTodo()).toEqual([{ op: "swap", from: "/f", to: "/g" }]);
      });
    });

    describe("write leases", () => {
      it("one node at a time; the holder renews; only the holder gives it back", async () => {
        expect(await st.takeWriteLease(7, "node-b", 60_000)).toBe(true);
        expect(await st.takeWriteLease(7, "node-c", 60_000)).toBe(false);
        expect(await st.takeWriteLease(7, "node-b", 60_000)).toBe(true);
        expect(await st.takeWriteLease(8, "node-c", 60_000)).toBe(true);
        await st.releaseWriteLease(7, "node-c");
        expect(await st.takeWriteLease(7, "node-c", 60_000)).toBe(false);
        await st.releaseWriteLease(7, "node-b");
        expect(await st.takeWriteLease(7, "node-c", 60_000)).toBe(true);
      });

      it("a lease runs out after its time", async () => {
        expect(await st.takeWriteLease(7, "node-b", 50)).toBe(true);
        await until("the lease to run out", () => st.takeWriteLease(7, "node-c", 60_000));
      });
    });

    describe("membership", () => {
      const info = { id: "node-b", address: "10.0.0.2:5000", startedAt: 111 };
      it("register, heartbeat with a report, unregister", async () => {
        expect(await st.registerNode(info, 60_000)).toEqual({ node: undefined, seen: undefined });
        let n = (await st.nodes()).get("node-b")!;
        expect(n).toMatchObject({ ...info, alive: true, report: { cache: [] } });
        expect(n.lastSeen).toBeNumber();
        const cache = [{ tier: "ram", bytes: 10, files: 1, limit: 100 }];
        await st.heartbeat("node-b", 60_000, { cache });
        n = (await (await h.open("node-c")).nodes()).get("node-b")!;
        expect(n.report).toEqual({ cache });
        await st.unregisterNode("node-b");
        expect((await st.nodes()).get("node-b")).toMatchObject({ ...info, alive: false });
      });

      it("a heartbeat runs out after its time", async () => {
        await st.registerNode(info, 60_000);
        await st.heartbeat("node-b", 50);
        await until("the heartbeat to run out", async () => (await st.nodes()).get("node-b")?.alive === false);
      });

      it("withdrawNode puts back what registerNode replaced, or removes a first registration", async () => {
        const prev0 = await st.registerNode(info, 60_000);
        const prev1 = await st.registerNode({ ...info, startedAt: 222 }, 60_000);
        expect(JSON.parse(prev1.node!)).toEqual(info);
        expect(prev1.seen).toBeString();
        await st.withdrawNode("node-b", prev1);
        expect((await st.nodes()).get("node-b")).toMatchObject({ ...info, alive: false });
        await st.withdrawNode("node-b", prev0);
        expect((await st.nodes()).has("node-b")).toBe(false);
      });

      it("forgetNode strips a node from every file and counts the files left without a copy", async () => {
        await st.registerNode({ ...info, id: "node-c", startedAt: 5 }, 60_000);
        await st.registerNode(info, 60_000);
        const only = await file(ROOT, "only", { holder: "node-b" });
        const cached = await file(ROOT, "cached", { holder: "node-b" });
        const stale = await file(ROOT, "stale", { holder: "node-b" });
        const other = await file(ROOT, "other", { holder: "node-c" });
        // A copy on node-c's current run keeps "cached" alive; one made by an earlier run (4) does not.
        await st.addCachedCopies("node-c", 5, [{ ino: cached.ino, version: cached.version }]);
        await st.addCachedCopies("node-c", 4, [{ ino: stale.ino, version: stale.version }]);
        await st.addCachedCopies("node-b", 111, [{ ino: other.ino, version: other.version }]);
        await st.rename(ROOT, "only", ROOT, "only2", 0);
        const progress: [number, number][] = [];
        expect(await st.forgetNode("node-b", (seen, bound) => progress.push([seen, bound]))).toEqual({ held: 3, orphaned: 2 });
        // Four holder lists and three cached-copy lists were looked at.
        expect(progress.at(-1)).toEqual([7, other.ino]);
        expect((await st.nodes()).has("node-b")).toBe(false);
        expect(await st.locations(only.ino)).toEqual(new Map());
        expect(await st.holders(other.ino)).toEqual({ data: new Map([["node-c", other.version]]), cached: new Map() });
        expect((await st.holders(cached.ino)).cached.size).toBe(1);
        expect(await (await h.open("node-b")).takeTodo()).toEqual([]);
      });
    });

    describe("replication", () => {
      it("settings are cluster-wide: set by one client, read by another", async () => {
        expect(await st.setting("replicas")).toBeUndefined();
        await st.setSetting("replicas", "2");
        expect(await (await h.open("node-b")).setting("replicas")).toBe("2");
      });

      it("copy orders queue per node, are given oldest first, and stay (as backlog) until done", async () => {
        const b = await h.open("node-b");
        await st.queueCopy("node-b", { ino: 5, version: 7, path: "/x" });
        await st.queueCopy("node-b", { ino: 6, version: 8, path: "/y" });
        await st.queueCopy("node-c", { ino: 9, version: 1, path: "/z" });
        expect(await b.copyOrders()).toEqual(new Map([["node-b", [{ ino: 5, version: 7, path: "/x" }, { ino: 6, version: 8, path: "/y" }]], ["node-c", [{ ino: 9, version: 1, path: "/z" }]]]));
        // Left on the list until done with: a node that died making a copy finds it again.
        expect(await b.nextCopies("node-b", 1)).toEqual([{ ino: 5, version: 7, path: "/x" }]);
        expect(await b.nextCopies("node-b", 10)).toEqual([{ ino: 5, version: 7, path: "/x" }, { ino: 6, version: 8, path: "/y" }]);
        await b.copyDone("node-b", { ino: 5, version: 7, path: "/x" });
        expect(await b.nextCopies("node-b", 10)).toEqual([{ ino: 6, version: 8, path: "/y" }]);
        await b.copyDone("node-b", { ino: 6, version: 8, path: "/y" });
        await b.copyDone("node-b", { ino: 6, version: 8, path: "/y" });
        expect(await b.nextCopies("node-b", 10)).toEqual([]);
        expect(await b.copyOrders()).toEqual(new Map([["node-c", [{ ino: 9, version: 1, path: "/z" }]]]));
      });

      it("addHolder lists a copy only at the file's current version", async () => {
        const f = await file(ROOT, "f", { holder: A });
        expect(await st.addHolder(f.ino, "node-b", f.version)).toBe(true);
        expect(await st.locations(f.ino)).toEqual(new Map([[A, f.version], ["node-b", f.version]]));
        const g = await st.setData(f.ino, 3, 1n, 1n, A, "/f");
        expect(await st.addHolder(f.ino, "node-c", f.version)).toBe(false);
        expect((await st.locations(f.ino)).has("node-c")).toBe(false);
        expect(await st.addHolder(f.ino, "node-c", g.version)).toBe(true);
        expect(await st.addHolder(999_999, "node-c", 1)).toBe(false);
      });

      it("one node holds the repair lease at a time; its holder renews it", async () => {
        const b = await h.open("node-b");
        expect(await st.takeRepairLease(A, 60_000)).toBe(true);
        expect(await b.takeRepairLease("node-b", 60_000)).toBe(false);
        expect(await st.takeRepairLease(A, 60_000)).toBe(true);
      });

      it("forgetting a node drops its copy orders; heartbeats carry free space", async () => {
        await st.registerNode({ id: "node-b", address: "b:1", startedAt: 1 }, 60_000);
        await st.heartbeat("node-b", 60_000, { cache: [], free: 12345 });
        expect((await st.nodes()).get("node-b")?.report?.free).toBe(12345);
        await st.queueCopy("node-b", { ino: 5, version: 7, path: "/x" });
        await st.forgetNode("node-b");
        expect(await st.copyOrders()).toEqual(new Map());
      });
    });

    describe("fsck and status scans", () => {
      it("scanFiles lists every regular file with its holders, with progress", async () => {
        const d = await dir(ROOT, "d");
        const f = await file(d, "f", { holder: "node-b", size: 3 });
        const g = await file(ROOT, "g");
        const got: number[] = [];
        let last: [number, number] | undefined;
        await st.scanFiles((b) => {
          for (const x of b) {
            got.push(x.ino);
            if (x.ino === f.ino) expect(x).toEqual({ ino: f.ino, size: 3, version: f.version, parent: d, holders: { data: new Map([["node-b", f.version]]), cached: new Map() } });
          }
        }, (seen, bound) => (last = [seen, bound]));
        expect(got.sort()).toEqual([f.ino, g.ino].sort());
        expect(last).toEqual([4, g.ino]);
      });

      it("scanInodes gives records, directory entries and file holders", async () => {
        const d = await dir(ROOT, "d");
        const f = await file(d, "f", { holder: "node-b" });
        const all = new Map<number, unknown>();
        await st.scanInodes((b) => b.forEach((x) => all.set(x.ino, x)));
        expect(all.size).toBe(3);
        expect(all.get(ROOT)).toMatchObject({ mode: 0o040755, nlink: 3, entries: [{ name: "d", ino: d, type: 4 }] });
        expect(all.get(d)).toEqual({ ino: d, mode: DIR, size: 0, nlink: 2, version: (await st.get(d)).version, parent: ROOT, name: "d", entries: [{ name: "f", ino: f.ino, type: 8 }] });
        expect(all.get(f.ino)).toEqual({ ino: f.ino, mode: FILE, size: 0, nlink: 1, version: f.version, parent: d, name: "f", holders: { data: new Map([["node-b", f.version]]), cached: new Map() } });
      });

      it("dropHolder unlists only while its reason holds", async () => {
        await st.registerNode({ id: "node-b", address: "b", startedAt: 1 }, 60_000);
        const f = await file(ROOT, "f", { holder: "node-b", version: 5 });
        expect(await st.dropHolder(f.ino, "node-b", 5, "stale")).toBe(false);
        expect(await st.dropHolder(f.ino, "node-b", 5, "unknown")).toBe(false);
        expect(await st.dropHolder(f.ino, "node-b", 4, "absent")).toBe(false);
        expect(await st.dropHolder(f.ino, "node-b", 5, "absent")).toBe(true);
        expect(await st.locations(f.ino)).toEqual(new Map());
        const g = await file(ROOT, "g", { holder: "node-x", version: 5 });
        expect(await st.dropHolder(g.ino, "node-x", 5, "unknown")).toBe(true);
        await file(ROOT, "h", { holder: "node-b", version: 5 });
        const hh = await st.lookup(ROOT, "h");
        await st.setData(hh.ino, 0, 1n, 1n, "node-c", "/h", { version: 6 });
        expect(await st.dropHolder(hh.ino, "node-c", 6, "stale")).toBe(false);
      });

      it("dropDanglingEntry removes only an entry whose inode has no record", async () => {
        // Two entries naming one inode number (a store that lost writes hands numbers out again).
        const x = await st.reserveInodes(2);
        await file(ROOT, "old", { ino: x });
        await file(ROOT, "new", { ino: x });
        await st.remove(ROOT, "new", false);
        await st.purge(x);
        await st.create(ROOT, "olddir", { mode: DIR, uid: 0, gid: 0, ino: x + 1 });
        await st.create(ROOT, "newdir", { mode: DIR, uid: 0, gid: 0, ino: x + 1 });
        await st.remove(ROOT, "newdir", true);
        const live = await file(ROOT, "live");
        expect(await st.dropDanglingEntry(ROOT, "live", live.ino)).toBe(false);
        expect(await st.dropDanglingEntry(ROOT, "old", x + 5)).toBe(false);
        expect(await st.dropDanglingEntry(ROOT, "old", x)).toBe(true);
        expect((await st.get(ROOT)).nlink).toBe(3);
        expect(await st.dropDanglingEntry(ROOT, "olddir", x + 1)).toBe(true);
        expect((await st.get(ROOT)).nlink).toBe(2);
        expect((await st.listDir(ROOT)).map((e) => e.name)).toEqual(["live"]);
      });

      it("settleOrphan: unlisted with links, kept while a node lives, else purged", async () => {
        const x = await st.reserveInodes(1);
        await file(ROOT, "f", { ino: x });
        await st.remove(ROOT, "f", false);
        await file(ROOT, "g", { ino: x });
        expect(await st.orphans()).toEqual([x]);
        expect(await st.settleOrphan(x)).toBe("unlisted");
        expect(await st.orphans()).toEqual([]);
        const o = await file(ROOT, "o");
        await st.remove(ROOT, "o", false);
        await st.registerNode({ id: "node-b", address: "b", startedAt: 1 }, 60_000);
        expect(await st.settleOrphan(o.ino)).toBe("kept");
        expect(await st.orphans()).toEqual([o.ino]);
        await st.unregisterNode("node-b");
        expect(await st.settleOrphan(o.ino)).toBe("purged");
        expect(await outcome(st.get(o.ino))).toBe("ENOENT");
        expect(await st.orphans()).toEqual([]);
      });
    });

    describe("change feed", () => {
      /** b's subscriber, collecting what it hears. */
      async function listener(id: string, ackAfterMs?: number) {
        const s = await h.open(id);
        const heard: Invalidation[] = [];
        await s.subscribe((invs, ack) => {
          heard.push(...invs);
          if (ack && ackAfterMs !== undefined) setTimeout(ack, ackAfterMs);
        }, () => {});
        return { s, heard };
      }

      it("a change made through one client reaches another client's subscriber, not its own", async () => {
        const b = await listener("node-b");
        const own: Invalidation[] = [];
        await st.subscribe((invs) => own.push(...invs), () => {});
        const f = await file(ROOT, "f");
        const root = await st.get(ROOT);
        await st.setData(f.ino, 1, 1n, 1n, A, "/f");
        await st.setAttrs(f.ino, { uid: 3 });
        await st.rename(ROOT, "f", ROOT, "g", 0);
        await st.remove(ROOT, "g", false);
        await until("five changes", () => b.heard.length >= 5);
        // The directory's times and links after the create come along: the only change of its record.
        expect(b.heard[0]).toEqual({ origin: A, added: [[ROOT, "f", f.ino]], removed: [], inodes: [ROOT], data: [], todo: [], touched: [[ROOT, String(root.ctime), root.nlink]] });
        expect(b.heard[1]).toMatchObject({ origin: A, inodes: [f.ino], data: [f.ino] });
        expect(b.heard[2]).toMatchObject({ inodes: [f.ino], data: [] });
        expect(b.heard[3]).toMatchObject({ removed: [[ROOT, "f"], [ROOT, "g"]], added: [[ROOT, "g", f.ino]] });
        expect(b.heard[3]!.inodes).toContain(f.ino);
        expect(b.heard[4]).toMatchObject({ removed: [[ROOT, "g"]], inodes: [ROOT, f.ino] });
        expect(own).toEqual([]);
      });

      it("a create tells the directory's ctime and link count as the store has them after it (a mkdir's too, a time moved forward too); a create over a name does not", async () => {
        const b = await listener("node-b");
        const d = await dir(ROOT, "d");
        await file(d, "late", { ctime: 5_000_000_000_000_000_000n });
        await file(d, "early", { ctime: 1n });
        await dir(d, "sub");
        await file(d, "early", { replace: "/d/early" });
        await until("five creates", () => b.heard.length >= 5);
        const after = await st.get(d);
        expect(after.ctime).toBe(5_000_000_000_000_000_003n);
        expect(b.heard.slice(1, 4).map((m) => m.touched)).toEqual([[[d, "5000000000000000000", 2]], [[d, "5000000000000000001", 2]], [[d, "5000000000000000002", 3]]]);
        expect(after.nlink).toBe(3);
        expect(b.heard[4]!.touched).toBeUndefined();
      });

      it("createMany tells each create's directory ctime and link count as creates one after another would, each directory's apart", async () => {
        const b = await listener("node-b");
        const d = await dir(ROOT, "d");
        const e = await dir(ROOT, "e");
        const eBefore = (await st.get(e)).ctime;
        const at = (parent: number, name: string, extra: Partial<NewInode> = {}) => ({ parent, name, init: { mode: FILE, uid: 1000, gid: 100, ...extra } });
        const out = await st.createMany([
          at(d, "late", { ctime: 5_000_000_000_000_000_000n }),
          at(e, "x", { ctime: 7n }),
          at(d, "early", { ctime: 1n }),
          at(d, "late"),
          at(d, "sub", { mode: DIR, ctime: 2n }),
          at(d, "early", { replace: "/d/early" }),
        ]);
        expect(out.map((r) => (r instanceof Error ? errnoName(errnoOf(r) ?? -1) : "made"))).toEqual(["made", "made", "made", "EEXIST", "made", "made"]);
        await until("seven creates", () => b.heard.length >= 7);
        expect(b.heard.slice(2).map((m) => m.touched)).toEqual([
          [[d, "5000000000000000000", 2]],
          [[e, String(eBefore + 1n), 2]],
          [[d, "5000000000000000001", 2]],
          [[d, "5000000000000000002", 3]],
          undefined,
        ]);
        expect(await st.get(d)).toMatchObject({ ctime: 5_000_000_000_000_000_003n, mtime: 5_000_000_000_000_000_003n, nlink: 3 });
        expect(await st.get(e)).toMatchObject({ ctime: eBefore + 1n, nlink: 2 });
      });

      it("links, attribute and xattr changes, and fsck's entry removals are announced too", async () => {
        const b = await listener("node-b");
        const x = await st.reserveInodes(1);
        await file(ROOT, "gone", { ino: x });
        await file(ROOT, "again", { ino: x });
        await st.remove(ROOT, "again", false);
        await st.purge(x);
        const f = await file(ROOT, "f");
        const d = await dir(ROOT, "d");
        // The last of them heard: messages before it arrive before it.
        await until("the creates", () => b.heard.some((i) => i.added.some(([, name]) => name === "d")));
        b.heard.length = 0;
        await st.link(f.ino, d, "l");
        await st.setXattr(f.ino, "user.a", new Uint8Array([1]), 0);
        await st.removeXattr(f.ino, "user.a");
        await st.dropDanglingEntry(ROOT, "gone", x);
        await until("four changes", () => b.heard.length >= 4);
        const none = { removed: [], added: [], data: [], todo: [] };
        expect(b.heard).toEqual([
          { origin: A, ...none, added: [[d, "l", f.ino]], inodes: [f.ino, d] },
          { origin: A, ...none, inodes: [f.ino] },
          { origin: A, ...none, inodes: [f.ino] },
          { origin: A, ...none, removed: [[ROOT, "gone"]], inodes: [ROOT] },
        ]);
      });

      it("an invalidation names the nodes given todo entries", async () => {
        const b = await listener("node-b");
        await file(ROOT, "f", { holder: "node-b" });
        await st.remove(ROOT, "f", false);
        await until("the remove", () => b.heard.length >= 2);
        expect(b.heard[1]!.todo).toEqual(["node-b"]);
      });

      it("a removal returns once live subscribers acknowledged it", async () => {
        await st.subscribe(() => {}, () => {});
        await st.registerNode({ id: "node-b", address: "b", startedAt: 1 }, 60_000);
        const b = await listener("node-b", 100);
        await file(ROOT, "f");
        const t0 = Date.now();
        await st.remove(ROOT, "f", false);
        const took = Date.now() - t0;
        expect(took).toBeGreaterThanOrEqual(90);
        expect(took).toBeLessThan(450);
        expect(b.heard.some((i) => i.removed.length === 1)).toBe(true);
      });

      it("a new version waits for the nodes watching the file (recordAndHolders with watch), once: they watch no more after it", async () => {
        await st.subscribe(() => {}, () => {});
        const b = await listener("node-b", 100);
        const f = await file(ROOT, "f");
        const timed = async (fn: () => Promise<unknown>) => {
          const t0 = Date.now();
          await fn();
          return Date.now() - t0;
        };
        // A read without watch makes no watcher.
        await b.s.recordAndHolders(f.ino);
        expect(await timed(() => st.setData(f.ino, 1, 1n, 1n, A, "/f"))).toBeLessThan(90);
        const watched = await b.s.recordAndHolders(f.ino, true);
        expect(watched.r.size).toBe(1);
        const took = await timed(() => st.setData(f.ino, 2, 2n, 2n, A, "/f"));
        expect(took).toBeGreaterThanOrEqual(90);
        expect(took).toBeLessThan(450);
        expect(b.heard.some((i) => i.data.includes(f.ino))).toBe(true);
        expect(await timed(() => st.setData(f.ino, 3, 3n, 3n, A, "/f"))).toBeLessThan(90);
        // So does a watch begun with the records of several files.
        expect(await b.s.recordsAndHolders([f.ino, 999_999], true)).toEqual([await st.recordAndHolders(f.ino), undefined]);
        expect(await timed(() => st.setData(f.ino, 5, 5n, 5n, A, "/f"))).toBeGreaterThanOrEqual(90);
        expect(await timed(() => st.setData(f.ino, 6, 6n, 6n, A, "/f"))).toBeLessThan(90);
        // The writer's own watch never waits for itself.
        await st.recordAndHolders(f.ino, true);
        expect(await timed(() => st.setData(f.ino, 7, 7n, 7n, A, "/f"))).toBeLessThan(90);
      });

      it("a new name in a directory waits for the nodes watching it (listDir with watch), once, whichever change makes it", async () => {
        await st.subscribe(() => {}, () => {});
        const b = await listener("node-b", 100);
        const d = await dir(ROOT, "d");
        const other = await dir(ROOT, "o");
        const timed = async (fn: () => Promise<unknown>) => {
          const t0 = Date.now();
          await fn();
          return Date.now() - t0;
        };
        // A listing without watch makes no watcher.
        await b.s.listDir(d);
        expect(await timed(() => file(d, "f1"))).toBeLessThan(90);
        // The watch's listing is that of the moment it began.
        expect((await b.s.listDir(d, true)).map((e) => e.name)).toEqual(["f1"]);
        const took = await timed(() => file(d, "f2"));
        expect(took).toBeGreaterThanOrEqual(90);
        expect(took).toBeLessThan(450);
        expect(b.heard.some((i) => i.added.some(([p, n]) => p === d && n === "f2"))).toBe(true);
        // It watches no more: the next name does not wait.
        expect(await timed(() => file(d, "f3"))).toBeLessThan(90);
        // A name made elsewhere, or a change in another directory, does not wait for it either.
        await b.s.listDir(d, true);
        expect(await timed(() => file(other, "g"))).toBeLessThan(90);
        // A link, a rename into it and an exchange (into the other directory, watched) wait as a create does.
        const g = await st.lookup(other, "g");
        expect(await timed(() => st.link(g.ino, d, "l"))).toBeGreaterThanOrEqual(90);
        await b.s.listDir(d, true);
        expect(await timed(() => st.rename(other, "g", d, "g", 0))).toBeGreaterThanOrEqual(90);
        await file(other, "x");
        await b.s.listDir(other, true);
        expect(await timed(() => st.rename(d, "f1", other, "x", 2))).toBeGreaterThanOrEqual(90);
        // The maker's own watch never waits for itself, and stays.
        await st.listDir(d, true);
        expect(await timed(() => file(d, "f4"))).toBeLessThan(90);
        await b.s.listDir(d, true);
        expect(await timed(() => file(d, "f5"))).toBeGreaterThanOrEqual(90);
        // A removal takes no watch away.
        await b.s.listDir(d, true);
        await st.remove(d, "f5", false);
        expect(await timed(() => file(d, "f6"))).toBeGreaterThanOrEqual(90);
        // A directory removed and its number gone: no watcher is left behind it.
        expect(await outcome(b.s.listDir(999_999, true))).toBe("ENOENT");
      });

      it("a watcher that never acknowledges is waited for each time it watched, though it let a wait run out before", async () => {
        await st.subscribe(() => {}, () => {});
        await st.registerNode({ id: "node-b", address: "b", startedAt: 1 }, 60_000);
        const b = await listener("node-b");
        const f = await file(ROOT, "f");
        for (let i = 1; i <= 2; i++) {
          await b.s.recordAndHolders(f.ino, true);
          const t0 = Date.now();
          await st.setData(f.ino, i, 1n, 1n, A, "/f");
          expect(Date.now() - t0).toBeGreaterThanOrEqual(400);
          expect(Date.now() - t0).toBeLessThan(2000);
        }
      });

      it("a watcher late with a new version is not left out of the next removal's wait, as a node late with a removal is", async () => {
        await st.subscribe(() => {}, () => {});
        await st.registerNode({ id: "node-b", address: "b", startedAt: 1 }, 60_000);
        const b = await listener("node-b", 700);
        const f = await file(ROOT, "f");
        await file(ROOT, "g");
        await b.s.recordAndHolders(f.ino, true);
        await st.setData(f.ino, 1, 1n, 1n, A, "/f");
        const t0 = Date.now();
        await st.remove(ROOT, "g", false);
        expect(Date.now() - t0).toBeGreaterThanOrEqual(90);
      });

      it("watches hold only for a subscribed node, from the moment subscribe returns (its feed shown current), and while every live node waits for watchers", async () => {
        const b = await h.open("node-b");
        expect(b.watchesHold()).toBe(false);
        await b.subscribe(() => {}, () => {});
        // Shown current before subscribe returns (before a node mounts): another node's change in its
        // first moments is raced like any later one, not refused (ESTALE after the kernel's retry).
        expect(b.watchesHold()).toBe(true);
        // An older node writes without waiting for anyone.
        await st.registerNode({ id: "node-c", address: "c", startedAt: 1 }, 60_000);
        await until("b's watches to stop holding", () => !b.watchesHold());
        await st.registerNode({ id: "node-c", address: "c", startedAt: 2, watches: true }, 60_000);
        await until("b's watches to hold again", () => b.watchesHold());
      });

      it("a live node that never acknowledges delays a removal at most briefly", async () => {
        await st.subscribe(() => {}, () => {});
        await st.registerNode({ id: "node-b", address: "b", startedAt: 1 }, 60_000);
        await listener("node-b");
        await file(ROOT, "f");
        const t0 = Date.now();
        await st.remove(ROOT, "f", false);
        expect(Date.now() - t0).toBeLessThan(2000);
        await file(ROOT, "g");
        const t1 = Date.now();
        await st.remove(ROOT, "g", false);
        // Not waited for again until it answers.
        expect(Date.now() - t1).toBeLessThan(200);
      });
    });

    describe("atomicity under concurrent callers", () => {
      it("50 creates of one name from two clients: one wins, the rest EEXIST", async () => {
        const b = await h.open("node-b");
        const res = await Promise.all(Array.from({ length: 50 }, (_, i) => outcome((i % 2 ? b : st).create(ROOT, "same", { mode: i % 3 ? FILE : DIR, uid: 0, gid: 0 }))));
        expect(res.filter((r) => r === "ok")).toHaveLength(1);
        expect(res.filter((r) => r === "EEXIST")).toHaveLength(49);
        expect(await st.listDir(ROOT)).toHaveLength(1);
        expect(await consistentTree(st)).toBe((await st.listDir(ROOT))[0]!.type === 4 ? 2 : 1);
      });

      it("200 creates of distinct names get distinct inode numbers", async () => {
        const b = await h.open("node-b");
        const rs = await Promise.all(Array.from({ length: 200 }, (_, i) => (i % 2 ? b : st).create(ROOT, `f${i}`, { mode: FILE, uid: 0, gid: 0 })));
        expect(new Set(rs.map((r) => r.ino)).size).toBe(200);
        expect(await st.listDir(ROOT)).toHaveLength(200);
      });

      it("reserveInodes and creates from three clients never hand out a number twice", async () => {
        const clients = [st, await h.open("node-b"), await h.open("node-c")];
        const got: number[] = [];
        await Promise.all(
          Array.from({ length: 150 }, async (_, i) => {
            const c = clients[i % 3]!;
            if (i % 5 === 0) got.push((await c.create(ROOT, `f${i}`, { mode: FILE, uid: 0, gid: 0 })).ino);
            else {
              const first = await c.reserveInodes(7);
              for (let k = 0; k < 7; k++) got.push(first + k);
            }
          }),
        );
        expect(new Set(got).size).toBe(got.length);
        expect(got.length).toBe(30 + 120 * 7);
      });

      it("20 removes of one name: one succeeds", async () => {
        const b = await h.open("node-b");
        await file(ROOT, "f");
        const res = await Promise.all(Array.from({ length: 20 }, (_, i) => outcome((i % 2 ? b : st).remove(ROOT, "f", false))));
        expect(res.filter((r) => r === "ok")).toHaveLength(1);
        expect(res.filter((r) => r === "ENOENT")).toHaveLength(19);
      });

      it("rmdir racing a create inside: never both", async () => {
        const b = await h.open("node-b");
        for (let i = 0; i < 20; i++) {
          const d = await dir(ROOT, `d${i}`);
          const [rm, mk] = await Promise.all([outcome(st.remove(ROOT, `d${i}`, true)), outcome(b.create(d, "x", { mode: FILE, uid: 0, gid: 0 }))]);
          expect([rm, mk].sort()).toEqual(rm === "ok" ? ["ENOENT", "ok"] : ["ENOTEMPTY", "ok"]);
        }
        await consistentTree(st);
      });

      it("concurrent directory renames from two clients keep one tree, without cycles", async () => {
        const b = await h.open("node-b");
        const dirs: number[] = [];
        for (let i = 0; i < 8; i++) dirs.push(await dir(ROOT, `d${i}`));
        let seed = 7;
        const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
        const ops = Array.from({ length: 300 }, (_, k) => [dirs[rnd(8)]!, rnd(9), k % 2 ? b : st] as const);
        const outcomes = await Promise.all(
          ops.map(async ([ino, to, c]) => {
            const r = await c.get(ino);
            const target = to === 8 ? ROOT : dirs[to]!;
            return outcome(c.rename(r.parent, r.name, target, r.name, 0));
          }),
        );
        for (const o of outcomes) expect(["ok", "ENOENT", "EINVAL"]).toContain(o);
        expect(outcomes.filter((o) => o === "ok").length).toBeGreaterThan(0);
        expect(await consistentTree(st)).toBe(9);
      });

      it("concurrent exchanges and renames of files keep every file under exactly one name", async () => {
        const b = await h.open("node-b");
        const a = await dir(ROOT, "a");
        const files: number[] = [];
        for (let i = 0; i < 10; i++) files.push((await file(i % 2 ? a : ROOT, `f${i}`)).ino);
        await Promise.all(
          Array.from({ length: 200 }, async (_, k) => {
            const c = k % 2 ? b : st;
            const x = await c.get(files[k % 10]!);
            const y = await c.get(files[(k * 7 + 3) % 10]!);
            await outcome(c.rename(x.parent, x.name, y.parent, y.name, k % 3 === 0 ? 0 : RENAME_EXCHANGE));
          }),
        );
        const names = [...(await st.listDir(ROOT)), ...(await st.listDir(a))].filter((e) => e.type === 8);
        for (const n of names) expect((await st.get(n.ino)).nlink).toBe(1);
        expect(new Set(names.map((n) => n.ino)).size).toBe(names.length);
        const orphans = await st.orphans();
        expect(names.length + orphans.length).toBe(10);
        for (const n of names) {
          const r = await st.get(n.ino);
          expect((await st.lookup(r.parent, r.name)).ino).toBe(n.ino);
        }
      });

      it("concurrent links and unlinks of one file keep its link count equal to its names", async () => {
        const b = await h.open("node-b");
        const f = await file(ROOT, "f");
        await Promise.all(
          Array.from({ length: 60 }, (_, k) => {
            const c = k % 2 ? b : st;
            const n = `n${k % 7}`;
            return outcome(k % 3 ? c.link(f.ino, ROOT, n) : c.remove(ROOT, n, false));
          }),
        );
        const names = (await st.listDir(ROOT)).filter((e) => e.ino === f.ino);
        const r = await st.get(f.ino);
        expect(r.nlink).toBe(names.length);
        expect([`${r.parent}/${r.name}`, ...(await st.extraNames(f.ino)).map((e) => `${e.parent}/${e.name}`)].sort()).toEqual(names.map((e) => `${ROOT}/${e.name}`).sort());
      });

      it("20 nodes asking for one write lease: exactly one gets it", async () => {
        const res = await Promise.all(Array.from({ length: 20 }, (_, i) => st.takeWriteLease(42, `n${i}`, 60_000)));
        expect(res.filter(Boolean)).toHaveLength(1);
      });
    });
  });
}
