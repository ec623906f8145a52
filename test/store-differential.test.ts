import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { RENAME_EXCHANGE, RENAME_NOREPLACE } from "../src/fuse/types.ts";
import { createMemorySpace, createMemoryStore } from "../src/meta/memory-store.ts";
import { createRedisStore } from "../src/meta/redis-store.ts";
import type { MetadataStore } from "../src/meta/store.ts";
import { errnoName, errnoOf } from "../src/util/errno.ts";
import { startRedis, type TestRedis } from "./helpers/redis.ts";

/**
 * The memory store against the Redis store, operation by operation: the same random sequence of
 * namespace, holder and todo operations from two nodes goes to both, and every answer and the whole
 * state afterwards must agree. This finds what the contract suite does not think to ask.
 * Times are left out (each store reads its own clock), and so is which name of a file with several
 * is its primary one after that one is removed (Redis picks it at random: SPOP).
 */
let redis: TestRedis | undefined;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

const NODES = ["node-a", "node-b"];
const NAMES = ["a", "b", "c", "d"];
const FILE = 0o100644, DIR = 0o040755;

/** mulberry32: small, seeded, and even in its low bits. */
function rng(seed: number) {
  let s = seed >>> 0;
  const next = () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = Math.imul(s ^ (s >>> 15), s | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (t ^ (t >>> 14)) >>> 0;
  };
  return { int: (n: number) => next() % n, pick: <T>(a: readonly T[]) => a[next() % a.length]! };
}

/** Everything a store holds, times and primary-name choice aside. */
async function snapshot(st: MetadataStore, inos: number[]) {
  const recs: unknown[] = [];
  await st.scanInodes((b) => {
    for (const r of b) recs.push({ ...r, entries: r.entries?.sort((x, y) => x.name.localeCompare(y.name)), parent: undefined, name: undefined });
  });
  const names = await Promise.all(inos.map(async (i) => {
    const r = await st.get(i).catch(() => undefined);
    if (!r) return [];
    return [`${r.parent}/${r.name}`, ...(await st.extraNames(i)).map((e) => `${e.parent}/${e.name}`)].sort();
  }));
  const xattrs = await Promise.all(inos.map(async (i) => (await st.listXattr(i)).sort()));
  return {
    recs: recs.sort((a, b) => (a as { ino: number }).ino - (b as { ino: number }).ino),
    names,
    xattrs,
    orphans: (await st.orphans()).sort(),
    counter: (await st.inodeCounter()).counter,
  };
}

/** One random operation, the same on each store given; its answer, times and primary names left out. */
type Op = { what: string; run: (st: MetadataStore) => Promise<unknown> };

function makeOp(r: ReturnType<typeof rng>, inos: number[], dirs: number[], k: number): Op {
  const ino = () => (r.int(8) === 0 ? 999 : inos.length && r.int(5) ? r.pick(inos) : 1);
  /** Mostly a directory made so far; sometimes anything (a file, a gone inode). */
  const dir = () => (r.int(6) === 0 ? ino() : r.pick([1, ...dirs]));
  const name = () => r.pick(NAMES);
  const node = () => r.pick([...NODES, "node-c", ""]);
  const v = 1000 + k;
  switch (r.int(13)) {
    case 0:
    case 1: {
      const [p, n, h] = [dir(), name(), node()];
      return { what: `create ${p}/${n} holder ${h}`, run: (st) => st.create(p, n, { mode: FILE, uid: 1, gid: 1, holder: h, version: v, gen: `g${k}` }).then((x) => [x.ino, x.mode, x.nlink]) };
    }
    case 2: {
      const [p, n, sgid] = [dir(), name(), r.int(2) ? 0o2000 : 0];
      return { what: `mkdir ${p}/${n} mode ${(DIR | sgid).toString(8)}`, run: (st) => st.create(p, n, { mode: DIR | sgid, uid: 1, gid: 2, version: v, gen: `g${k}` }).then((x) => [x.ino, x.mode, x.gid]) };
    }
    case 3: {
      const [i, p, n] = [ino(), dir(), name()];
      return { what: `link ${i} -> ${p}/${n}`, run: (st) => st.link(i, p, n).then((x) => [x.record.ino, x.record.nlink, x.from, x.to]) };
    }
    case 4:
    case 5: {
      const [p, n, d] = [dir(), name(), r.int(3) === 0];
      return { what: `remove ${p}/${n} dir ${d}`, run: (st) => st.remove(p, n, d) };
    }
    case 6:
    case 7: {
      const [p, n, np, nn, f] = [dir(), name(), dir(), name(), r.pick([0, 0, RENAME_NOREPLACE, RENAME_EXCHANGE])];
      return { what: `rename ${p}/${n} -> ${np}/${nn} flags ${f}`, run: (st) => st.rename(p, n, np, nn, f) };
    }
    case 8: {
      const [i, h] = [ino(), r.pick(NODES)];
      return { what: `setData ${i} by ${h}`, run: (st) => st.setData(i, k, 1n, 1n, h, "/p", { version: v }).then((x) => [x.size, x.version]) };
    }
    case 9: {
      const [i, m] = [ino(), r.int(0o777)];
      // The file type stays: only the permission bits change.
      const type = async (st: MetadataStore) => ((await st.get(i).catch(() => undefined))?.mode ?? FILE) & 0o170000;
      return { what: `setAttrs ${i} mode ${m.toString(8)}`, run: async (st) => st.setAttrs(i, { mode: (await type(st)) | m, uid: k }).then((x) => [x.mode, x.uid]) };
    }
    case 10: {
      const [i, x, f] = [ino(), name(), r.int(3)];
      return r.int(3) ? { what: `setXattr ${i} ${x} flags ${f}`, run: (st) => st.setXattr(i, x, new Uint8Array([k & 255]), f) } : { what: `removeXattr ${i} ${x}`, run: (st) => st.removeXattr(i, x) };
    }
    case 11: {
      const [i, n] = [ino(), node()];
      return r.int(2)
        ? { what: `addCachedCopies ${i} on ${n}`, run: async (st) => st.addCachedCopies(n, 7, [{ ino: i, version: (await st.get(i).catch(() => undefined))?.version ?? 0 }]) }
        : { what: `dropCachedCopy ${i} on ${n}`, run: async (st) => st.dropCachedCopy(i, n, (await st.get(i).catch(() => undefined))?.version ?? 0) };
    }
    default: {
      const i = ino();
      return { what: `purge ${i}`, run: (st) => st.purge(i) };
    }
  }
}

async function outcome(p: Promise<unknown>): Promise<unknown> {
  try {
    return ["ok", await p];
  } catch (e) {
    const n = errnoOf(e);
    if (n === undefined) throw e;
    return errnoName(n);
  }
}

describe("memory store against Redis store", () => {
  test.each([1, 2, 3, 4])("random sequence %i: same answers, same state", async (seed) => {
    const space = createMemorySpace();
    const mem = NODES.map((nodeId) => createMemoryStore({ space, nodeId }));
    const red = await Promise.all(NODES.map((nodeId) => createRedisStore({ url: redis!.url, nodeId, prefix: `diff${seed}:` })));
    try {
      for (const s of [mem[0]!, red[0]!]) {
        await s.init(0o755, 0, 0);
        for (const id of [...NODES, "node-c"]) await s.registerNode({ id, address: id, startedAt: 7 }, 60_000);
      }
      const r = rng(seed);
      const inos: number[] = [], dirs: number[] = [];
      const errnos = new Set<string>();
      for (let k = 0; k < 500; k++) {
        const op = makeOp(r, inos, dirs, k);
        const who = r.int(2);
        const [a, b] = [await outcome(op.run(mem[who]!)), await outcome(op.run(red[who]!))];
        expect({ k, op: op.what, got: a }).toEqual({ k, op: op.what, got: b });
        if (typeof a === "string") errnos.add(a);
        if (Array.isArray(a) && a[0] === "ok" && op.what.match(/^(create|mkdir)/)) {
          inos.push((a[1] as number[])[0]!);
          if (op.what.startsWith("mkdir")) dirs.push((a[1] as number[])[0]!);
        }
      }
      const [ms, rs] = [await snapshot(mem[0]!, inos), await snapshot(red[0]!, inos)];
      expect(ms).toEqual(rs);
      for (const id of [...NODES, "node-c"]) {
        const [m, rd] = [createMemoryStore({ space, nodeId: id }), await createRedisStore({ url: redis!.url, nodeId: id, prefix: `diff${seed}:` })];
        red.push(rd);
        expect({ id, todo: await m.takeTodo() }).toEqual({ id, todo: await rd.takeTodo() });
      }
      // The sequence did make a tree worth comparing.
      expect(inos.length).toBeGreaterThan(30);
      expect(dirs.length).toBeGreaterThan(5);
      expect(errnos.size).toBeGreaterThanOrEqual(5);
    } finally {
      await Promise.all([...mem, ...red].map((s) => s.close()));
    }
  });
});
