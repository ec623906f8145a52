import { beforeEach, describe, expect, test } from "bun:test";
import { createMemorySpace, createMemoryStore } from "../../src/meta/memory-store.ts";
import type { Invalidation, MetadataStore } from "../../src/meta/store.ts";
import { createCurrentAnswers, type CurrentAnswers } from "../../src/vfs/current-answers.ts";

const ROOT = 1, FILE = 0o100644, DIR = 0o040755;

/** Node A asks through answers; node B changes the same metadata, and A hears it. */
let a: MetadataStore, b: MetadataStore, answers: CurrentAnswers, heard: number;
/** Calls of each store method A made, and the arguments of the last. */
let asks: Map<PropertyKey, number>;
let lastArgs: Map<PropertyKey, unknown[]>;
/** Runs after each answer A gets, before it goes on, while it returns true. */
let between: (() => Promise<boolean>) | undefined;

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 500) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(2);
  }
}

/** B's change, heard by A before this returns. */
async function onB<T>(change: () => Promise<T>): Promise<T> {
  const before = heard;
  const got = await change();
  await until("A to hear it", () => heard > before);
  return got;
}

beforeEach(async () => {
  const space = createMemorySpace();
  const raw = createMemoryStore({ space, nodeId: "a" });
  b = createMemoryStore({ space, nodeId: "b" });
  await raw.init(0o755, 0, 0);
  asks = new Map();
  lastArgs = new Map();
  between = undefined;
  heard = 0;
  const counted = new Proxy(raw, {
    get(t, k, recv) {
      const v = Reflect.get(t, k, recv);
      if (typeof v !== "function" || k === "subscribe" || k === "watchesHold") return v;
      return async (...args: unknown[]) => {
        asks.set(k, (asks.get(k) ?? 0) + 1);
        lastArgs.set(k, args);
        const got: unknown = await (v as (...x: unknown[]) => Promise<unknown>).apply(t, args);
        if (between && !(await between())) between = undefined;
        return got;
      };
    },
  });
  answers = createCurrentAnswers(counted);
  a = answers.store;
  await raw.subscribe((invs: Invalidation[]) => {
    for (const inv of invs) answers.heard(inv);
    heard++;
  }, () => answers.missed());
});

describe("current answers", () => {
  test("an answer whose inode another node changed on its way is asked again", async () => {
    const f = await b.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    between = async () => (await onB(() => b.setAttrs(f.ino, { mode: 0o600 })), false);
    expect((await a.get(f.ino)).mode & 0o7777).toBe(0o600);
    expect(asks.get("get")).toBe(2);
  });

  test("an answer no change crossed is taken as it is", async () => {
    const f = await b.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    const g = await b.create(ROOT, "g", { mode: FILE, uid: 0, gid: 0 });
    between = async () => (await onB(() => b.setAttrs(g.ino, { mode: 0o600 })), false);
    expect((await a.get(f.ino)).mode).toBe(FILE);
    expect(asks.get("get")).toBe(1);
  });

  test("a directory's answer crossed by names added in it only is brought up to the times and link count heard, not asked again", async () => {
    const d = await b.create(ROOT, "d", { mode: DIR, uid: 0, gid: 0 });
    between = async () => (await onB(() => b.create(d.ino, "sub", { mode: DIR, uid: 0, gid: 0 })), false);
    const got = await a.get(d.ino);
    const now = await b.get(d.ino);
    expect(asks.get("get")).toBe(1);
    expect([got.mtime, got.ctime, got.nlink]).toEqual([now.mtime, now.ctime, now.nlink]);
    expect(got.nlink).toBe(3);
  });

  test("a change crossing every try: the answer goes after a bounded number of them", async () => {
    const f = await b.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    let mode = 0o600;
    between = async () => (await onB(() => b.setAttrs(f.ino, { mode: mode++ })), true);
    await a.get(f.ino);
    expect(asks.get("get")).toBe(8);
  });

  test("a lookup crossed by another file renamed onto its name is asked again", async () => {
    await b.create(ROOT, "x", { mode: FILE, uid: 0, gid: 0 });
    const y = await b.create(ROOT, "y", { mode: FILE, uid: 0, gid: 0 });
    between = async () => (await onB(() => b.rename(ROOT, "y", ROOT, "x", 0)), false);
    expect((await a.lookup(ROOT, "x")).ino).toBe(y.ino);
    expect(asks.get("lookup")).toBe(2);
  });

  test("of many records in one call, only those crossed are asked again", async () => {
    const fs = await Promise.all(["f", "g", "h"].map((n) => b.create(ROOT, n, { mode: FILE, uid: 0, gid: 0 })));
    const [f, g, h] = fs.map((x) => x.ino) as [number, number, number];
    between = async () => (await onB(() => b.setAttrs(g, { uid: 7 })), false);
    const got = await a.getMany([f, g, h]);
    expect(got.map((r) => r?.uid)).toEqual([0, 7, 0]);
    expect(asks.get("getMany")).toBe(2);
    expect(lastArgs.get("getMany")).toEqual([[g]]);
  });

  test("a change of this node's (setAttrs) crossed by another node's of the same inode: its record is read again", async () => {
    const f = await b.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    between = async () => (await onB(() => b.setAttrs(f.ino, { mode: 0o640 })), false);
    const got = await a.setAttrs(f.ino, { uid: 5 });
    expect([got.uid, got.mode & 0o7777]).toEqual([5, 0o640]);
    expect(asks.get("get")).toBe(1);
  });

  test("a create of this node's that another node's create of the same name replaced on its way: its own answer, not ENOENT (it was made, then replaced)", async () => {
    const ino = await a.reserveInodes(1);
    // B's create replaces A's file, and B drops its record (no links left).
    between = async () => (await onB(async () => (await b.create(ROOT, "same", { mode: FILE, uid: 0, gid: 0, replace: "same" }), await b.purge(ino))), false);
    const got = await a.create(ROOT, "same", { mode: FILE, uid: 0, gid: 0, ino, replace: "same" });
    expect(got.ino).toBe(ino);
    expect((await b.lookup(ROOT, "same")).ino).not.toBe(ino);
  });

  test("a change of this node's made ahead of the store (written behind) crossing an answer: the answer is read again after it", async () => {
    const f = await a.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    // The write behind: sent once the answer to the chmod asked before it is on its way back.
    between = async () => {
      between = undefined;
      answers.changedHere(f.ino);
      await a.setData(f.ino, 4096, 5n, 5n, "a", "/f");
      return false;
    };
    const got = await a.setAttrs(f.ino, { mode: 0o600 });
    expect([got.size, got.mode & 0o7777]).toEqual([4096, 0o600]);
    expect(asks.get("get")).toBe(1);
  });

  test("changes missed (the feed was down): every answer on its way is asked again", async () => {
    const f = await b.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    between = async () => (answers.missed(), false);
    await a.get(f.ino);
    expect(asks.get("get")).toBe(2);
  });

  test("past the most inodes and names it marks, it forgets them, and every answer on its way is asked again", async () => {
    const f = await b.create(ROOT, "f", { mode: FILE, uid: 0, gid: 0 });
    between = async () => {
      for (let i = 0; i <= 100_000; i++) answers.heard({ origin: "b", added: [], removed: [], inodes: [1_000_000 + i], data: [], todo: [] });
      return false;
    };
    await a.get(f.ino);
    expect(asks.get("get")).toBe(2);
    // Forgotten: an answer asked after that is taken as it is.
    await a.get(f.ino);
    expect(asks.get("get")).toBe(3);
  });
});
