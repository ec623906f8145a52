import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { createHash, randomBytes } from "node:crypto";
import { spawn } from "bun";
import { errCode, fuseUnavailable, waitFor } from "./helpers/env.ts";
import type { TestDaemon } from "./helpers/daemon.ts";
import { scrape } from "./helpers/metrics.ts";
import { useCluster, type Cluster } from "./helpers/node.ts";

const skip = fuseUnavailable();

const RAM_MIB = 4;
const FILES = 360;
const WORKERS = 4;

/** A worker: runs its tasks one after another, each reading 4 files whole; prints "name sha256 bytes" per read. */
const WORKER = `const fs = require("fs"), { createHash } = require("crypto"); const [dir, list] = process.argv.slice(-2);
const out = []; for (const task of JSON.parse(fs.readFileSync(list, "utf8"))) for (const name of task) {
  const b = fs.readFileSync(dir + "/" + name); out.push(name + " " + createHash("sha256").update(b).digest("hex") + " " + b.length); }
process.stdout.write(out.join("\\n"));`;

const sha = (b: Uint8Array) => createHash("sha256").update(b).digest("hex");

/**
 * B (cluster.nodes[1]), killed -9 while a copy was arriving in its cache dir, started again: no copy
 * file is left; none is listed as B's (with A stopped, C reading any of unheld, files only B had
 * copies of, gets EIO); and B reads every file of k/ as want has it (name -> sha256).
 */
async function restartedClean(cluster: Cluster, cacheDir: string, unheld: string[], want: Map<string, string>): Promise<void> {
  const b = (cluster.nodes[1] = await cluster.start("b"));
  const [a, , c] = cluster.nodes as [TestDaemon, TestDaemon, TestDaemon];
  const left = fs.readdirSync(cacheDir, { recursive: true }).map(String).filter((n) => /^\d+\.\d+/.test(n.split("/").at(-1)!));
  expect(left).toEqual([]);
  await a.stop();
  try {
    for (const name of unheld) expect(errCode(() => fs.readFileSync(join(c.mnt, "k", name)))).toBe("EIO");
  } finally {
    cluster.nodes[0] = await cluster.start("a");
  }
  for (const [name, hash] of want) expect({ name, hash: sha(fs.readFileSync(join(b.mnt, "k", name))) }).toEqual({ name, hash });
}

describe.skipIf(!!skip)("read-ahead bounded by what the RAM tier keeps until it is read", () => {
  /** Over the tests so far: copies fetched ahead in one may be evicted unread in the next. */
  const total = { read: 0, moved: 0, unused: 0 };
  const cluster = useCluster("readahead-bound", ["a", "b", "c"], { b: ["--metrics-port", "0", "--ram-cache-mib", String(RAM_MIB), "--disk-cache-mib", "0"] });

  /**
   * A directory of small files (8-64 KiB, together 3x B's RAM tier; or files of size() bytes) written
   * half on A, half on C after B listed it empty (B's listing then learns the names from A's and C's
   * creates, without their inodes); name -> sha256.
   */
  async function inputs(dir: string, files = FILES, size = () => 8192 + Math.floor(Math.random() * 57345)): Promise<Map<string, string>> {
    const [a, b, c] = cluster.nodes as [TestDaemon, TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, dir));
    await waitFor("the directory on B", () => fs.existsSync(join(b.mnt, dir)));
    expect(fs.readdirSync(join(b.mnt, dir))).toEqual([]);
    const want = new Map<string, string>();
    for (let i = 0; i < files; i++) {
      const data = randomBytes(size());
      const name = `in${String(i).padStart(4, "0")}`;
      fs.writeFileSync(join((i % 2 ? c : a).mnt, dir, name), data);
      want.set(name, sha(data));
    }
    return want;
  }

  /** Tasks of 4 files each, in the order given, dealt to workers processes on B running at once. */
  async function run(dir: string, order: string[], want: Map<string, string>, workers = WORKERS): Promise<{ read: number; moved: number; unused: number; hits: number; tasksPerSecond: number; byShim: number; inJs: number }> {
    const b = cluster.nodes[1]!;
    const tasks: string[][] = [];
    for (let i = 0; i < order.length; i += 4) tasks.push(order.slice(i, i + 4));
    const lists = Array.from({ length: workers }, (_, w) => {
      const p = join(cluster.base, `${dir}-tasks-${w}.json`);
      fs.writeFileSync(p, JSON.stringify(tasks.filter((_, t) => t % workers === w)));
      return p;
    });
    const before = await scrape(b);
    const t0 = performance.now();
    const outs = await Promise.all(lists.map(async (list) => {
      const p = spawn([process.execPath, "-e", WORKER, join(b.mnt, dir), list], { stdout: "pipe", stderr: "inherit" });
      const text = await new Response(p.stdout).text();
      expect(await p.exited).toBe(0);
      return text;
    }));
    const seconds = (performance.now() - t0) / 1000;
    const after = await scrape(b);
    let read = 0, reads = 0;
    for (const line of outs.join("\n").split("\n")) {
      const [name, hash, bytes] = line.split(" ");
      // Nothing read is wrong: every byte as written.
      expect({ name, hash }).toEqual({ name, hash: want.get(name!) });
      read += Number(bytes);
      reads++;
    }
    expect(reads).toBe(order.length);
    const delta = (name: string, labels?: Record<string, string>) => after(name, labels) - before(name, labels);
    const r = {
      read,
      moved: delta("mcfs_peer_bytes_total", { direction: "received" }),
      unused: delta("mcfs_readahead_unused_bytes_total"),
      // Found fetched ahead: through JS, or by the shim, from the grant made as the copy landed.
      hits: delta("mcfs_cache_hits_total") + delta("mcfs_shim_opens_total"),
      byShim: delta("mcfs_read_bytes_total", { source: "local" }),
      inJs: delta("mcfs_read_bytes_total", { source: "memory" }),
      tasksPerSecond: +(tasks.length / seconds).toFixed(1),
    };
    for (const k of ["read", "moved", "unused"] as const) total[k] += r[k];
    console.log(`${dir}: read ${read} bytes on B, moved ${r.moved} (${(r.moved / read).toFixed(2)}x), ${r.unused} fetched ahead and evicted unread, ${r.hits} of ${reads} opens hit, ${r.tasksPerSecond} tasks/s, ${r.byShim} bytes read by the shim, ${r.inJs} in JS`);
    // Copies in the RAM tier are memfds the shim reads from: no read crosses into JS.
    expect(r.inJs).toBe(0);
    expect(r.byShim).toBeGreaterThanOrEqual(read);
    return r;
  }

  test("shuffled reads of a directory 3x the RAM tier move at most 1.2x the bytes read", async () => {
    const want = await inputs("shuffled");
    const b = cluster.nodes[1]!;
    // Tasks list their directory first: the listing is what lets B fetch a file's siblings along.
    expect(fs.readdirSync(join(b.mnt, "shuffled")).length).toBe(FILES);
    const order = [...want.keys()];
    for (let i = order.length - 1; i > 0; i--) {
      const j = Math.floor(Math.random() * (i + 1));
      [order[i], order[j]] = [order[j]!, order[i]!];
    }
    const r = await run("shuffled", order, want);
    expect(r.moved).toBeGreaterThanOrEqual(r.read);
    expect(r.moved).toBeLessThanOrEqual(1.2 * r.read);
    expect(total.unused).toBeLessThanOrEqual(total.moved - total.read);
  }, 240_000);

  test("a directory two nodes wrote, read in listing order: each holder is asked once, for its own files", async () => {
    const files = 60;
    const want = await inputs("mixed", files, () => 8192 + Math.floor(Math.random() * 8193));
    const b = cluster.nodes[1]!;
    const order = fs.readdirSync(join(b.mnt, "mixed"));
    expect(order.length).toBe(files);
    const calls = async () => (await scrape(b))("mcfs_peer_rpcs_total", { side: "client", method: "ReadFiles", code: "OK" });
    const before = await calls();
    const r = await run("mixed", order, want, 1);
    // Together well within B's RAM tier: one call to A for A's files, one to C for C's.
    expect(await calls() - before).toBe(2);
    expect(r.moved).toBe(r.read);
  }, 240_000);

  test("reads in listing order move at most 1.2x the bytes read, and most find their copy fetched ahead", async () => {
    const want = await inputs("sequential");
    const b = cluster.nodes[1]!;
    const order = fs.readdirSync(join(b.mnt, "sequential"));
    expect(order.length).toBe(FILES);
    const r = await run("sequential", order, want);
    expect(r.moved).toBeGreaterThanOrEqual(r.read);
    expect(r.moved).toBeLessThanOrEqual(1.2 * r.read);
    expect(total.unused).toBeLessThanOrEqual(total.moved - total.read);
    expect(r.hits).toBeGreaterThan(FILES / 2);
  }, 240_000);

  /** Files past the batches' limit (256 KiB), fetched ahead one at a time: together 6x B's RAM tier. */
  const MEDIUM = 48;
  const medium = () => (300 << 10) + Math.floor(Math.random() * (400 << 10));

  test.each([
    ["shuffled", false],
    ["in listing order", true],
  ])("reads of medium files (300-700 KiB), %s, move at most 1.2x the bytes read", async (_, inOrder) => {
    const dir = inOrder ? "medium-sequential" : "medium-shuffled";
    const want = await inputs(dir, MEDIUM, medium);
    const b = cluster.nodes[1]!;
    const order = fs.readdirSync(join(b.mnt, dir));
    expect(order.length).toBe(MEDIUM);
    if (!inOrder) {
      for (let i = order.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1));
        [order[i], order[j]] = [order[j]!, order[i]!];
      }
    }
    // One reader: a workflow node runs its tasks one after another.
    const r = await run(dir, order, want, 1);
    expect(r.moved).toBeGreaterThanOrEqual(r.read);
    expect(r.moved).toBeLessThanOrEqual(1.2 * r.read);
    expect(total.unused).toBeLessThanOrEqual(total.moved - total.read);
    // Each read's task went on to the next file: those after it were on their way.
    if (inOrder) expect(r.hits).toBeGreaterThan(MEDIUM / 2);
  }, 240_000);

  test("medium files rewritten on A while B fetches them ahead: B reads each as A last wrote it", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const dir = "medium-rewritten";
    fs.mkdirSync(join(a.mnt, dir));
    const names = Array.from({ length: 16 }, (_, i) => `m${String(i).padStart(2, "0")}`);
    const last = new Map<string, Buffer>();
    for (const n of names) {
      const data = randomBytes(medium());
      fs.writeFileSync(join(a.mnt, dir, n), data);
      last.set(n, data);
    }
    expect(fs.readdirSync(join(b.mnt, dir))).toEqual(names);
    // B's read of the first starts the read-ahead of the rest; A rewrites half of them meanwhile:
    // other sizes, a cut to a small file, a rename over one.
    expect(sha(fs.readFileSync(join(b.mnt, dir, names[0]!)))).toBe(sha(last.get(names[0]!)!));
    for (const [i, n] of names.entries()) {
      if (i === 0 || i % 2) continue;
      const data = i % 4 ? randomBytes(medium()) : randomBytes(5000);
      if (i % 3) fs.writeFileSync(join(a.mnt, dir, n), data);
      else {
        fs.writeFileSync(join(a.mnt, dir, `${n}.new`), data);
        fs.renameSync(join(a.mnt, dir, `${n}.new`), join(a.mnt, dir, n));
      }
      last.set(n, data);
    }
    for (const n of names) expect({ n, hash: sha(fs.readFileSync(join(b.mnt, dir, n))) }).toEqual({ n, hash: sha(last.get(n)!) });
  });

  test("a node's own files never come back to it from another node's copy of them, fetched along with that node's files", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "mine"));
    const want = new Map<string, string>();
    let fromA = 0;
    // Together well within B's RAM tier: nothing is evicted, every byte moved is a copy made.
    for (let i = 0; i < 60; i++) {
      const data = randomBytes(8192 + Math.floor(Math.random() * 32768));
      fs.writeFileSync(join((i % 2 ? b : a).mnt, "mine", `m${String(i).padStart(3, "0")}`), data);
      want.set(`m${String(i).padStart(3, "0")}`, sha(data));
      if (i % 2 === 0) fromA += data.length;
    }
    // A reads them all: it lists copies of B's files, so it can serve them too.
    for (const name of want.keys()) fs.readFileSync(join(a.mnt, "mine", name));
    const order = fs.readdirSync(join(b.mnt, "mine"));
    const r = await run("mine", order, want);
    expect(r.moved).toBe(fromA);
  }, 240_000);

  test("numbered files read in the order of their numbers (Redis keeps a directory past 512 names in hash order): three in four find their copy fetched ahead, and readdir lists them so", async () => {
    // Made before B looks at the directory: B's listing comes from Redis whole, in its hash order.
    const files = 600;
    const [a, b, c] = cluster.nodes as [TestDaemon, TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "numbered"));
    const want = new Map<string, string>();
    for (let i = 0; i < files; i++) {
      const data = randomBytes(8192 + Math.floor(Math.random() * 57345));
      fs.writeFileSync(join((i % 2 ? c : a).mnt, "numbered", `f${i}`), data);
      want.set(`f${i}`, sha(data));
    }
    const order = [...want.keys()];
    expect(fs.readdirSync(join(b.mnt, "numbered"))).toEqual(order);
    const r = await run("numbered", order, want);
    expect(r.moved).toBeLessThanOrEqual(1.2 * r.read);
    expect(r.hits).toBeGreaterThan((files * 3) / 4);
  }, 240_000);
});

describe.skipIf(!!skip)("RAM copies pushed out go on in the disk tier", () => {
  const cluster = useCluster("demote", ["a", "b"], { b: ["--metrics-port", "0", "--ram-cache-mib", "4"] });

  test("files read again after outgrowing the RAM tier come from this node's disk: the second pass moves no bytes", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "big"));
    // 3x the RAM tier, each file over the batch limit: fetched one by one, in order.
    const want = new Map<string, string>();
    for (let i = 0; i < 24; i++) {
      const data = randomBytes(512 << 10);
      fs.writeFileSync(join(a.mnt, "big", `t${String(i).padStart(2, "0")}`), data);
      want.set(`t${String(i).padStart(2, "0")}`, sha(data));
    }
    await waitFor("B sees every file", () => fs.existsSync(join(b.mnt, "big", "t23")));
    const pass = async () => {
      const before = await scrape(b);
      for (const [name, hash] of want) expect({ name, hash: sha(fs.readFileSync(join(b.mnt, "big", name))) }).toEqual({ name, hash });
      const after = await scrape(b);
      return (name: string, labels?: Record<string, string>) => after(name, labels) - before(name, labels);
    };
    const start = await scrape(b);
    const first = await pass();
    expect(first("mcfs_peer_bytes_total", { direction: "received" })).toBe(24 * (512 << 10));
    const second = await pass();
    expect(second("mcfs_peer_bytes_total", { direction: "received" })).toBe(0);
    expect(second("mcfs_cache_misses_total")).toBe(0);
    // Each pushed out of RAM by the ones after it, and kept on disk (counted once its file is written, on the pool).
    expect(first("mcfs_cache_evictions_total", { tier: "ram" })).toBe(0);
    await waitFor("16 copies pushed out of RAM written to B's disk", async () => (await scrape(b))("mcfs_cache_demotions_total", { result: "moved" }) - start("mcfs_cache_demotions_total", { result: "moved" }) >= 16);
  }, 120_000);
});

describe.skipIf(!!skip)("a node killed while it moves RAM copies to its disk tier", () => {
  const cluster = useCluster("demote-kill", ["a", "b", "c"], { b: ["--ram-cache-mib", "4"] });

  test("after kill -9 mid-move and a restart: no half-written copy is left or served, nothing is listed as B's, and B reads every file right", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const cacheDir = join(cluster.base, "b-cache");
    fs.mkdirSync(join(a.mnt, "k"));
    // 12x the RAM tier in files of half of it: each read pushes the copy before it to the disk tier, 2 MiB at a time.
    const want = new Map<string, string>();
    for (let i = 0; i < 24; i++) {
      const data = randomBytes(2 << 20);
      fs.writeFileSync(join(a.mnt, "k", `m${i}`), data);
      want.set(`m${i}`, sha(data));
    }
    await waitFor("B sees every file", () => fs.existsSync(join(b.mnt, "k", "m23")));
    const reader = spawn(["sh", "-c", `while :; do cat ${join(b.mnt, "k")}/m* > /dev/null || exit 0; done`], { stdout: "ignore", stderr: "ignore" });
    try {
      // Killed with a copy's file half made: its name ends .part-N until it is whole.
      const moving = () => fs.readdirSync(cacheDir, { recursive: true }).some((n) => String(n).includes(".part-"));
      await waitFor("a copy on its way to B's disk tier", moving, 60_000);
      await b.kill();
    } finally {
      reader.kill("SIGKILL");
      await reader.exited;
    }
    await restartedClean(cluster, cacheDir, ["m0"], want);
  }, 180_000);
});

describe.skipIf(!!skip)("a node killed while it fetches a directory's medium files ahead", () => {
  // No RAM tier: each copy arrives as a file of B's disk tier, named .part-N until it is whole.
  const cluster = useCluster("ahead-kill", ["a", "b", "c"], { b: ["--ram-cache-mib", "0"] });

  test("after kill -9 in the middle of a fetch ahead and a restart: no half-written copy is left or served, nothing is listed as B's, and B reads every file right", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const cacheDir = join(cluster.base, "b-cache");
    fs.mkdirSync(join(a.mnt, "k"));
    const want = new Map<string, string>();
    const index = new Map<number, number>();
    for (let i = 0; i < 16; i++) {
      const data = randomBytes(8 << 20);
      const name = `m${String(i).padStart(2, "0")}`;
      fs.writeFileSync(join(a.mnt, "k", name), data);
      want.set(name, sha(data));
      index.set(fs.statSync(join(a.mnt, "k", name)).ino, i);
    }
    await waitFor("B sees every file", () => fs.existsSync(join(b.mnt, "k", "m15")));
    // The reader says which file it opens next; a copy arriving of a later one is B's read-ahead.
    const opening = join(cluster.base, "opening");
    fs.writeFileSync(opening, "-1");
    const reader = spawn(["sh", "-c", `i=0; for f in ${join(b.mnt, "k")}/m*; do echo $i > ${opening}; cat $f > /dev/null || exit 0; sleep 0.05; i=$((i+1)); done`], { stdout: "ignore", stderr: "ignore" });
    try {
      const fetchingAhead = () => {
        const reading = Number(fs.readFileSync(opening, "utf8"));
        return fs.readdirSync(cacheDir, { recursive: true }).some((n) => {
          const m = /^(\d+)\.\d+\.part-/.exec(String(n).split("/").at(-1)!);
          return m !== null && reading >= 0 && (index.get(Number(m[1])) ?? -1) > reading;
        });
      };
      await waitFor("a copy fetched ahead on its way to B", fetchingAhead, 60_000);
      await b.kill();
    } finally {
      reader.kill("SIGKILL");
      await reader.exited;
    }
    await restartedClean(cluster, cacheDir, ["m00", "m15"], want);
  }, 180_000);
});
