import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import type { Attr, Caller } from "../src/fuse/types.ts";
import type { Invalidation, MetadataStore } from "../src/meta/store.ts";
import { startRedis, type TestRedis } from "./helpers/redis.ts";
import { startVfsNode, type VfsNode } from "./helpers/vfs-node.ts";
import { waitFor } from "./helpers/env.ts";
import { E, toErrno } from "../src/util/errno.ts";

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL } = fs.constants;
const C: Caller = { uid: 0, gid: 0, pid: process.pid };

/** Store calls whose answers carry records (what a node caches and tells its kernel). */
type Asked = "get" | "getMany" | "lookup" | "recordAndHolders" | "setAttrs" | "setData" | "create";
const ASKED: ReadonlySet<PropertyKey> = new Set<Asked>(["get", "getMany", "lookup", "recordAndHolders", "setAttrs", "setData", "create"]);

/**
 * A store answer and another node's change crossing on their way: Redis answered node A before B's
 * change, and A heard of the change (the feed's message, on another connection) before it took the
 * answer in. The test orders it: A's call is held once its answer is in, while B changes what it
 * answered and A's feed delivers the change; then the answer goes on. What A then tells its kernel,
 * and keeps, must be B's change: the kernel would keep anything older for its attribute timeout,
 * with no message left to drop it.
 */
describe("an answer from the store that crossed another node's change on its way", () => {
  let redis: TestRedis;
  let a: VfsNode, b: VfsNode;
  /**
   * A file B changes after each change of a test: once A hears of it, A has heard of the change before
   * it too (B's messages come in order). Counts the messages about it A's feed delivered.
   */
  let marker = 0;
  let marks = 0;
  let flips = 0;
  /** Runs once, when A's next call of this kind has its answer. */
  let hold: { call: Asked; act: (got: unknown) => Promise<void> } | undefined;
  const holding = (s: MetadataStore): MetadataStore =>
    new Proxy(s, {
      get(t, k, recv) {
        const v = Reflect.get(t, k, recv);
        if (typeof v !== "function" || !ASKED.has(k)) return v;
        return async (...args: unknown[]) => {
          const got: unknown = await (v as (...a: unknown[]) => Promise<unknown>).apply(t, args);
          const h = hold;
          if (h?.call === k) {
            hold = undefined;
            await h.act(got);
          }
          return got;
        };
      },
    });

  beforeAll(async () => {
    redis = await startRedis();
    a = await startVfsNode(redis.url, "a", holding);
    b = await startVfsNode(redis.url, "b");
    const m = await b.vfs.create(C, 1, "marker", 0o600, O_WRONLY | O_CREAT);
    await b.vfs.release(C, m.attr.ino, m.open.fh, false);
    marker = m.attr.ino;
    await a.store.subscribe(
      (invs: Invalidation[]) => {
        for (const inv of invs) {
          a.vfs.invalidate(inv);
          if (inv.inodes.includes(marker)) marks++;
        }
      },
      () => a.vfs.resync(),
    );
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await redis?.stop();
  });

  /** B's change, and its message delivered to A's VFS before this returns. */
  async function onB(change: () => Promise<unknown>): Promise<void> {
    const before = marks;
    await change();
    await b.vfs.setattr(C, marker, { mode: 0o600 | (++flips & 1) });
    await waitFor("A to hear B's change", () => marks > before);
  }

  /** A directory made on B, one A never listed: A's first call about anything in it asks the store. */
  let dirs = 0;
  const dirOnB = async () => (await b.vfs.mkdir(C, 1, `d${++dirs}`, 0o755)).ino;
  async function fileOnB(dir: number, name: string): Promise<number> {
    const f = await b.vfs.create(C, dir, name, 0o644, O_WRONLY | O_CREAT);
    await b.vfs.release(C, f.attr.ino, f.open.fh, false);
    return f.attr.ino;
  }
  const perms = (x: Attr) => x.mode & 0o7777;
  const chmodOnB = (ino: number, mode: number) => onB(() => b.vfs.setattr(C, ino, { mode }));

  test("a getattr's record, as B chmods the directory: A answers and keeps the new mode", async () => {
    const d = await dirOnB();
    hold = { call: "get", act: () => chmodOnB(d, 0o700) };
    expect(perms(await a.vfs.getattr(C, d))).toBe(0o700);
    expect(hold).toBeUndefined();
    expect(perms(await a.vfs.getattr(C, d))).toBe(0o700);
  });

  test("a lookup's record, as B chmods the directory it names", async () => {
    const p = await dirOnB();
    const d = (await b.vfs.mkdir(C, p, "sub", 0o755)).ino;
    hold = { call: "lookup", act: () => chmodOnB(d, 0o711) };
    expect(perms(await a.vfs.lookup(C, p, "sub"))).toBe(0o711);
    expect(hold).toBeUndefined();
    expect(perms(await a.vfs.getattr(C, d))).toBe(0o711);
    expect(perms(await a.vfs.lookup(C, p, "sub"))).toBe(0o711);
  });

  test("a lookup's inode, as B renames another file onto the name: A answers the file the name has now", async () => {
    const p = await dirOnB();
    await fileOnB(p, "x");
    const y = await fileOnB(p, "y");
    hold = { call: "lookup", act: () => onB(() => b.vfs.rename(C, p, "y", p, "x", 0)) };
    expect((await a.vfs.lookup(C, p, "x")).ino).toBe(y);
    expect(hold).toBeUndefined();
    expect((await a.vfs.lookup(C, p, "x")).ino).toBe(y);
  });

  test("the records of a listing with attributes (readdirplus), as B chmods one of its files", async () => {
    const p = await dirOnB();
    const f = await fileOnB(p, "f");
    const fh = await a.vfs.opendir(C, p);
    try {
      hold = { call: "getMany", act: () => chmodOnB(f, 0o600) };
      const got = await a.vfs.readdir(C, p, fh, 0, 100, true);
      expect(hold).toBeUndefined();
      expect(perms(got.find((e) => e.name === "f")!.attr)).toBe(0o600);
      expect(perms(await a.vfs.getattr(C, f))).toBe(0o600);
    } finally {
      await a.vfs.releasedir(C, p, fh);
    }
  });

  test("an open's record, as B chmods the file: A's getattrs through the open handle answer the new mode", async () => {
    const p = await dirOnB();
    const f = await fileOnB(p, "f");
    hold = { call: "recordAndHolders", act: () => chmodOnB(f, 0o640) };
    const o = await a.vfs.open(C, f, O_RDONLY);
    try {
      expect(hold).toBeUndefined();
      expect(perms(await a.vfs.getattr(C, f, o.fh))).toBe(0o640);
    } finally {
      await a.vfs.release(C, f, o.fh, false);
    }
    expect(perms(await a.vfs.getattr(C, f))).toBe(0o640);
  });

  test("A's own chown, as B chmods the same file: A answers and keeps both", async () => {
    const p = await dirOnB();
    const f = await fileOnB(p, "f");
    await a.vfs.getattr(C, f);
    hold = { call: "setAttrs", act: () => chmodOnB(f, 0o604) };
    const got = await a.vfs.setattr(C, f, { uid: 4321 });
    expect(hold).toBeUndefined();
    expect([got.uid, perms(got)]).toEqual([4321, 0o604]);
    const now = await a.vfs.getattr(C, f);
    expect([now.uid, perms(now)]).toEqual([4321, 0o604]);
  });

  test("A's close publishing new bytes of its file, as B chmods it", async () => {
    const p = await dirOnB();
    const made = await a.vfs.create(C, p, "f", 0o644, O_WRONLY | O_CREAT);
    const f = made.attr.ino;
    await a.vfs.release(C, f, made.open.fh, false);
    const o = await a.vfs.open(C, f, O_WRONLY);
    expect(await a.vfs.write(C, f, o.fh, 0, Buffer.from("new bytes"))).toBe(9);
    hold = { call: "setData", act: () => chmodOnB(f, 0o620) };
    await a.vfs.release(C, f, o.fh, true);
    expect(hold).toBeUndefined();
    const now = await a.vfs.getattr(C, f);
    expect([now.size, perms(now)]).toEqual([9, 0o620]);
  });

  test("A's exclusive create, as B chmods the new file", async () => {
    const p = await dirOnB();
    hold = { call: "create", act: (got) => chmodOnB((got as { ino: number }).ino, 0o602) };
    const made = await a.vfs.create(C, p, "n", 0o644, O_WRONLY | O_CREAT | O_EXCL);
    try {
      expect(hold).toBeUndefined();
      expect(perms(made.attr)).toBe(0o602);
      expect(perms(await a.vfs.getattr(C, made.attr.ino, made.open.fh))).toBe(0o602);
    } finally {
      await a.vfs.release(C, made.attr.ino, made.open.fh, false);
    }
  });
});

/**
 * Messages of two nodes may reach a third in the other order than their changes were made, and after
 * that node read a listing that has both: B made a name, C replaced B's file under it, A listed the
 * directory, then heard C's message and B's. A's readdirplus told its kernel nothing under the name
 * (the file B's message named was gone): after two nodes' racing creates of a name, another node's ls
 * lacked it (cluster.test's create race, with the feed's messages gathered 20 ms).
 */
describe("a listing read before the messages of its changes arrive, in the other order than they were made", () => {
  let redis: TestRedis;
  let a: VfsNode, b: VfsNode, c: VfsNode;
  /** B's and C's messages, held from A's VFS until the test delivers them. */
  const heldFromA: Invalidation[] = [];
  beforeAll(async () => {
    redis = await startRedis();
    a = await startVfsNode(redis.url, "a");
    b = await startVfsNode(redis.url, "b");
    c = await startVfsNode(redis.url, "c");
    await a.store.subscribe((invs: Invalidation[]) => void heldFromA.push(...invs), () => a.vfs.resync());
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await c?.close();
    await redis?.stop();
  });

  test("readdirplus gives each name the file it has now", async () => {
    const p = (await b.vfs.mkdir(C, 1, "race", 0o755)).ino;
    const fromB = await b.vfs.create(C, p, "out", 0o644, O_WRONLY | O_CREAT);
    await b.vfs.release(C, fromB.attr.ino, fromB.open.fh, false);
    const other = await c.vfs.create(C, p, "other", 0o644, O_WRONLY | O_CREAT);
    await c.vfs.release(C, other.attr.ino, other.open.fh, false);
    await c.vfs.rename(C, p, "other", p, "out", 0);
    const fh = await a.vfs.opendir(C, p);
    try {
      const told = (from: string) => heldFromA.findIndex((inv) => inv.origin === from && inv.added.some(([dir, name]) => dir === p && name === "out"));
      await waitFor("B's create and C's rename on A's feed", () => told("b") >= 0 && told("c") >= 0);
      const [fromC, ...rest] = [heldFromA.splice(told("c"), 1)[0]!, ...heldFromA.splice(0)];
      for (const inv of [fromC, ...rest]) a.vfs.invalidate(inv);
      const got = await a.vfs.readdir(C, p, fh, 0, 100, true);
      expect(got.filter((e) => e.name !== "." && e.name !== "..").map((e) => [e.name, e.attr.ino])).toEqual([["out", other.attr.ino]]);
    } finally {
      await a.vfs.releasedir(C, p, fh);
    }
  });
});

/**
 * The kernel checks the sticky rule (only the owner of a file or of its directory, or root, takes
 * its name away) against the file it knows under the name; another node may put another user's file
 * there between that check and the change reaching the store. A hostile user on node A, renaming his
 * file onto a name in a /tmp-like directory as another user creates it on node B, replaced her file
 * (2 to 10 of 60 tries, a helper's probe): the store checks the rule again against the file there now.
 */
describe("a rename or unlink in a sticky directory whose name another node gave to another user's file after this node's kernel checked it", () => {
  let redis: TestRedis;
  let a: VfsNode, b: VfsNode;
  const root: Caller = { uid: 0, gid: 0, pid: process.pid };
  const alice: Caller = { uid: 3001, gid: 3001, pid: process.pid };
  const evil: Caller = { uid: 3002, gid: 3002, pid: process.pid };
  beforeAll(async () => {
    redis = await startRedis();
    a = await startVfsNode(redis.url, "a");
    b = await startVfsNode(redis.url, "b");
  });
  afterAll(async () => {
    await a?.close();
    await b?.close();
    await redis?.stop();
  });
  const made = async (n: VfsNode, c: Caller, dir: number, name: string) => {
    const m = await n.vfs.create(c, dir, name, 0o600, O_WRONLY | O_CREAT);
    await n.vfs.release(c, m.attr.ino, m.open.fh, false);
    return m.attr.ino;
  };
  const errno = (p: Promise<unknown>) => p.then(() => 0, toErrno);

  test("is refused (EPERM), and her file stays; his own names he may still move and remove", async () => {
    const t = (await b.vfs.mkdir(root, 1, "tmp", 0o1777)).ino;
    const his = await made(a, evil, t, "his");
    // Made on B after A's kernel found no such name (what it checked the rename and unlink against).
    const hers = await made(b, alice, t, "hers");
    expect(await errno(a.vfs.rename(evil, t, "his", t, "hers", 0))).toBe(E.EPERM);
    expect(await errno(a.vfs.unlink(evil, t, "hers"))).toBe(E.EPERM);
    expect((await b.vfs.lookup(alice, t, "hers")).ino).toBe(hers);
    expect((await a.vfs.lookup(evil, t, "his")).ino).toBe(his);
    await a.vfs.rename(evil, t, "his", t, "his2", 0);
    await a.vfs.unlink(evil, t, "his2");
    // The directory's owner may take any name away.
    await b.vfs.unlink(root, t, "hers");
  });
});
