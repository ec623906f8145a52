import { beforeEach, describe, expect, test } from "bun:test";
import { createMemorySpace, createMemoryStore } from "../../src/meta/memory-store.ts";
import { newGeneration, newVersion, type MetadataStore, type NewInode } from "../../src/meta/store.ts";
import { errnoOf, E } from "../../src/util/errno.ts";
import { nowNs } from "../../src/util/time.ts";
import { createHeldCreates, type HeldCreates } from "../../src/vfs/held-creates.ts";

const ROOT = 1;
/** Later than the root directory's times: a create sets them to its own. */
const T = nowNs() + 10_000_000_000n;

/** This node's store (a) under its held creates; another node's (b) sees what reached the store. */
let a: MetadataStore, b: MetadataStore, held: HeldCreates, creates: number, calls: number;

function file(ino: number, ctime: bigint): NewInode {
  return { mode: 0o100644, uid: 0, gid: 0, holder: "a", ino, version: newVersion(), gen: newGeneration(), ctime, mtime: ctime, atime: ctime };
}

async function absent(name: string): Promise<boolean> {
  return b.lookup(ROOT, name).then(
    () => false,
    (e: unknown) => errnoOf(e) === E.ENOENT,
  );
}

async function until(what: string, cond: () => Promise<boolean>): Promise<void> {
  for (let i = 0; !(await cond()); i++) {
    if (i > 2000) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(2);
  }
}

beforeEach(async () => {
  const space = createMemorySpace();
  const raw = createMemoryStore({ space, nodeId: "a" });
  b = createMemoryStore({ space, nodeId: "b" });
  await raw.init(0o755, 0, 0);
  creates = 0;
  calls = 0;
  // Counts the creates that reach the store, and the calls they went in.
  a = new Proxy(raw, {
    get(t, p) {
      const v = Reflect.get(t, p, t) as unknown;
      if ((p !== "create" && p !== "createMany") || typeof v !== "function") return v;
      return (...args: unknown[]) => {
        creates += p === "create" ? 1 : (args[0] as unknown[]).length;
        calls++;
        return (v as (...x: unknown[]) => unknown).apply(t, args);
      };
    },
  });
  held = createHeldCreates(a, 60_000);
});

describe("held creates", () => {
  test("a held create reaches the store with its file's first data, as one create; its hold answers with the record", async () => {
    const ino = await a.reserveInodes(1);
    const answer = held.hold(ino, ROOT, "f", file(ino, T));
    expect(await absent("f")).toBe(true);
    expect(creates).toBe(0);
    const sent = held.send(ino, { size: 4096, mtime: T + 2000n, ctime: T + 3000n, version: 77, path: "f" });
    expect(sent).toBeDefined();
    const r = await sent!;
    expect(await answer).toEqual(r);
    expect(creates).toBe(1);
    const seen = await b.lookup(ROOT, "f");
    expect({ ino: seen.ino, size: seen.size, mtime: seen.mtime, ctime: seen.ctime, version: seen.version }).toEqual({ ino, size: 4096, mtime: T + 2000n, ctime: T + 3000n, version: 77 });
    // The directory's times are the create's, not the first data's.
    expect((await b.get(ROOT)).mtime).toBe(T);
    expect(held.send(ino)).toBeUndefined();
  });

  test("every other call through its store sends the held creates first, in the order held; a local one does not", async () => {
    const first = await a.reserveInodes(3);
    const answers = ["x", "y", "z"].map((name, i) => held.hold(first + i, ROOT, name, file(first + i, 1000n + BigInt(i))));
    held.store.watchesHold();
    expect(await absent("x")).toBe(true);
    // This node's own lookup finds what it made: the store has it before the lookup is asked.
    expect((await held.store.lookup(ROOT, "y")).ino).toBe(first + 1);
    expect({ creates, calls }).toEqual({ creates: 3, calls: 1 });
    expect((await Promise.all(answers)).map((r) => r.ino)).toEqual([first, first + 1, first + 2]);
    expect((await b.listDir(ROOT)).map((e) => e.name).sort()).toEqual(["x", "y", "z"]);
  });

  test("creates sent in one turn of the event loop, from chains of promises one after another, go as one call when gathered by the turn; a call after them goes after them", async () => {
    for (const wholeTurn of [true, false]) {
      held = createHeldCreates(a, 60_000, wholeTurn);
      const first = await a.reserveInodes(3);
      const answers = [0, 1, 2].map((i) => held.hold(first + i, ROOT, `t${wholeTurn}${i}`, file(first + i, T)));
      const before = calls;
      await Promise.resolve().then(() => void held.send(first));
      await Promise.resolve().then(() => void held.send(first + 1));
      held.send(first + 2);
      // Not a read of them: it still goes after them.
      expect((await held.store.lookup(ROOT, `t${wholeTurn}2`)).ino).toBe(first + 2);
      expect((await Promise.all(answers)).map((r) => r.ino)).toEqual([first, first + 1, first + 2]);
      expect({ wholeTurn, calls: calls - before }).toEqual({ wholeTurn, calls: wholeTurn ? 1 : 3 });
    }
  });

  test("a read that asks of no held create goes ahead of them; one that asks of a held file, its name or its directory sends them first", async () => {
    const dir = await a.create(ROOT, "d", { mode: 0o40755, uid: 0, gid: 0 });
    const other = await a.create(ROOT, "other", { mode: 0o100644, uid: 0, gid: 0, holder: "a" });
    const first = await a.reserveInodes(11);
    const reads: [string, (ino: number, name: string) => Promise<unknown>, boolean][] = [
      ["lookup of another name in its directory", () => held.store.lookup(dir.ino, "sibling").catch(() => undefined), false],
      ["lookup of another directory's name", () => held.store.lookup(ROOT, "other"), false],
      ["record and holders of another file", () => held.store.recordAndHolders(other.ino), false],
      ["records of other files", () => held.store.recordsAndHolders([other.ino, ROOT]), false],
      ["record of another file", () => held.store.get(other.ino), false],
      ["held-by of another file", () => held.store.heldBy("a", [{ ino: other.ino, version: other.version }]), false],
      ["lookup of its name", (_, name) => held.store.lookup(dir.ino, name), true],
      ["record of its directory", () => held.store.get(dir.ino), true],
      ["records with its inode", (ino) => held.store.getMany([other.ino, ino]), true],
      ["record and holders of it", (ino) => held.store.recordAndHolders(ino), true],
      ["held-by of it", (ino) => held.store.heldBy("a", [{ ino, version: 1 }]), true],
    ];
    for (const [i, [what, read, sends]] of reads.entries()) {
      const ino = first + i, name = `f${i}`;
      const answer = held.hold(ino, dir.ino, name, file(ino, T));
      const before = creates;
      await read(ino, name);
      expect([what, creates - before]).toEqual([what, sends ? 1 : 0]);
      if (!sends) {
        expect(await b.lookup(dir.ino, name).catch((e: unknown) => errnoOf(e))).toBe(E.ENOENT);
        held.flush();
      }
      expect((await answer).ino).toBe(ino);
    }
  });

  test("a create held past its time goes alone, with no data", async () => {
    held = createHeldCreates(a, 20);
    const ino = await a.reserveInodes(1);
    const answer = held.hold(ino, ROOT, "slow", file(ino, 1000n));
    await until("the create to go alone", async () => !(await absent("slow")));
    expect((await answer).size).toBe(0);
    expect(held.send(ino, { size: 1, mtime: 1n, ctime: 1n, version: 1, path: "slow" })).toBeUndefined();
  });

  test("a second create of a name still held sends the first before it: the later one replaces it", async () => {
    const ino = await a.reserveInodes(2);
    const one = held.hold(ino, ROOT, "n", { ...file(ino, 1000n), replace: "n" });
    held.hold(ino + 1, ROOT, "n", { ...file(ino + 1, 2000n), replace: "n" });
    expect((await one).ino).toBe(ino);
    const two = await held.send(ino + 1, { size: 5, mtime: 3000n, ctime: 3000n, version: 9, path: "n" })!;
    expect(two.replaced?.ino).toBe(ino);
    expect((await b.lookup(ROOT, "n")).ino).toBe(ino + 1);
  });

  test("a create the store refuses rejects its hold with the store's error", async () => {
    const ino = await a.reserveInodes(1);
    const answer = held.hold(ino, 424242, "orphan", file(ino, 1000n));
    held.flush();
    expect(await answer.then(() => "made", (e: unknown) => errnoOf(e))).toBe(E.ENOENT);
  });
});
