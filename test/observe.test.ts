import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { spawnSync } from "bun";
import { MCFS, errCode, fuseUnavailable, waitFor } from "./helpers/env.ts";
import type { TestDaemon } from "./helpers/daemon.ts";
import { metricsPort, scrape } from "./helpers/metrics.ts";
import { useCluster } from "./helpers/node.ts";

const skip = fuseUnavailable();

describe.skipIf(!!skip)("metrics", () => {
  const n = useCluster("metrics", ["a", "b"], { a: ["--metrics-port", "0"], b: ["--metrics-port", "0"] }).nodes;

  test("counts move with a known workload: local reads, a cross-node read (peer bytes, a miss), a cached re-read (a hit)", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    const data = randomBytes(300 * 1024);
    fs.writeFileSync(join(a.mnt, "m.bin"), data);
    const a0 = await scrape(a);
    const b0 = await scrape(b);
    expect(fs.readFileSync(join(a.mnt, "m.bin")).equals(data)).toBe(true);
    expect(fs.readFileSync(join(b.mnt, "m.bin")).equals(data)).toBe(true);
    const a1 = await scrape(a);
    const b1 = await scrape(b);
    expect(a1("mcfs_read_bytes_total", { source: "local" }) - a0("mcfs_read_bytes_total", { source: "local" })).toBeGreaterThanOrEqual(data.length);
    expect(a1("mcfs_peer_bytes_total", { direction: "served" }) - a0("mcfs_peer_bytes_total", { direction: "served" })).toBe(data.length);
    expect(b1("mcfs_peer_bytes_total", { direction: "received" }) - b0("mcfs_peer_bytes_total", { direction: "received" })).toBe(data.length);
    expect(b1("mcfs_cache_misses_total") - b0("mcfs_cache_misses_total")).toBe(1);
    expect(b1("mcfs_peer_rpcs_total", { side: "client", code: "OK" }) - b0("mcfs_peer_rpcs_total", { side: "client", code: "OK" })).toBeGreaterThanOrEqual(1);
    expect(a1("mcfs_peer_rpcs_total", { side: "server" }) - a0("mcfs_peer_rpcs_total", { side: "server" })).toBeGreaterThanOrEqual(1);
    expect(b1("mcfs_cache_bytes", { tier: "ram" })).toBeGreaterThanOrEqual(data.length);

    expect(fs.readFileSync(join(b.mnt, "m.bin")).equals(data)).toBe(true);
    const b2 = await scrape(b);
    // From the cache: through JS, or by B's shim from the copy JS granted it at the first open.
    const fromCache = (m: typeof b0) => m("mcfs_cache_hits_total") + m("mcfs_shim_opens_total");
    expect(fromCache(b2) - fromCache(b1)).toBe(1);
    expect(b2("mcfs_peer_bytes_total", { direction: "received" })).toBe(b1("mcfs_peer_bytes_total", { direction: "received" }));

    expect(b2("mcfs_fuse_operations_total", { op: "open" }) + b2("mcfs_shim_opens_total")).toBeGreaterThanOrEqual(2);
    expect(b2("mcfs_fuse_operation_duration_seconds_count", { op: "open" })).toBe(b2("mcfs_fuse_operations_total", { op: "open" }));
    // The first open asked Redis; the second may be answered from B's watch of the file.
    expect(b2("mcfs_redis_operations_total", { op: "recordAndHolders" })).toBeGreaterThanOrEqual(1);
    expect(b2("mcfs_nodes", { state: "live" })).toBe(2);
    expect(() => fs.readFileSync(join(b.mnt, "no-such-file"))).toThrow();
    const b3 = await scrape(b);
    expect(b3("mcfs_fuse_operation_errors_total", { op: "lookup", errno: "ENOENT" })).toBeGreaterThanOrEqual(1);
    // Never a path in a label.
    const text = await (await fetch(`http://127.0.0.1:${metricsPort(b)}/metrics`)).text();
    expect(text).not.toContain("m.bin");
  });

  test("the kernel leaves taking setuid and setgid to mcfs (FUSE_HANDLE_KILLPRIV_V2): no security.capability lookup before each write", async () => {
    for (const d of n) expect((await scrape(d))("mcfs_fuse_kill_privileges")).toBe(1);
  });

  test("a writer's and a reader's close are taken in with nothing asked of the mount after them (the shim answers the releases and JS hears of them late): the open-files gauge goes back", async () => {
    const a = n[0]!;
    const wfd = fs.openSync(join(a.mnt, "g.txt"), "w");
    fs.writeSync(wfd, "x");
    // Made by the FUSE shim, the file is taken in by JS with its next request or a moment later.
    await waitFor("the writer's create taken in", async () => (await scrape(a))("mcfs_open_files") === 1);
    fs.closeSync(wfd);
    await waitFor("the writer's release", async () => (await scrape(a))("mcfs_open_files") === 0);
    const fd = fs.openSync(join(a.mnt, "g.txt"), "r");
    expect(fs.readSync(fd, Buffer.alloc(4), 0, 4, 0)).toBe(1);
    expect((await scrape(a))("mcfs_open_files")).toBe(1);
    fs.closeSync(fd);
    await waitFor("the reader's release", async () => (await scrape(a))("mcfs_open_files") === 0);
  });

  test("a read-only handle's closes cost no flush (the open asks the kernel for none); a writer's close still flushes and its bytes reach the other node", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    fs.writeFileSync(join(a.mnt, "nf.txt"), "first");
    // On both nodes: a file held here, and a copy of one held elsewhere.
    for (const d of [a, b]) {
      const before = (await scrape(d))("mcfs_fuse_flushes_total");
      for (let i = 0; i < 20; i++) expect(fs.readFileSync(join(d.mnt, "nf.txt"), "utf8")).toBe("first");
      const fd = fs.openSync(join(d.mnt, "nf.txt"), "r");
      // A dup's close is a flush too, when the handle has them.
      fs.closeSync(fs.openSync(`/proc/self/fd/${fd}`, "r"));
      fs.closeSync(fd);
      expect((await scrape(d))("mcfs_fuse_flushes_total") - before).toBe(0);
    }
    const before = (await scrape(b))("mcfs_fuse_flushes_total");
    const w = fs.openSync(join(b.mnt, "nf.txt"), "r+");
    fs.writeSync(w, "again", 0);
    fs.closeSync(w);
    expect((await scrape(b))("mcfs_fuse_flushes_total") - before).toBe(1);
    expect(fs.readFileSync(join(a.mnt, "nf.txt"), "utf8")).toBe("again");
  });
});

interface StatusJson {
  nodes: { id: string; alive: boolean; files: number; lastSeen?: number }[];
  files: number;
  singleCopy: { files: number };
  unavailable: { files: number; bytes: number };
}

describe.skipIf(!!skip)("mcfs status", () => {
  const cluster = useCluster("status", ["a", "b", "c"]);

  const status = (json: boolean) => {
    const r = spawnSync([MCFS, "status", "-u", cluster.redis.url, ...(json ? ["--json"] : [])], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(0);
    return r.stdout.toString();
  };

  test("three nodes, one killed: it shows expired, and its single-copy files as unavailable", async () => {
    const [a, b, c] = cluster.nodes as [TestDaemon, TestDaemon, TestDaemon];
    const id = (d: TestDaemon) => fs.readFileSync(join(d.root, ".mcfs/node-id"), "utf8").trim();
    // Each of A's in a directory of its own: B copies only what it reads (none of a directory's other files come ahead).
    const big = 300 * 1024;
    for (let i = 0; i < 5; i++) {
      fs.mkdirSync(join(a.mnt, `d${i}`));
      fs.writeFileSync(join(a.mnt, `d${i}`, `a${i}`), randomBytes(big));
    }
    for (let i = 0; i < 3; i++) fs.writeFileSync(join(c.mnt, `c${i}`), randomBytes(2000));
    // B reads two of A's files: they have a second copy, in B's cache.
    for (const f of ["d0/a0", "d1/a1"]) fs.readFileSync(join(b.mnt, f));
    await waitFor("B's copies listed", () => (JSON.parse(status(true)) as StatusJson).singleCopy.files === 6);
    const before = JSON.parse(status(true)) as StatusJson;
    expect(before.files).toBe(8);
    expect(before.unavailable.files).toBe(0);
    expect(before.nodes.find((x) => x.id === id(b))!.files).toBe(2);

    await a.kill();
    // Expired once its heartbeat runs out (15 s).
    await waitFor("A to show expired", () => (JSON.parse(status(true)) as StatusJson).nodes.find((x) => x.id === id(a))?.alive === false, 40_000);
    const st = JSON.parse(status(true)) as StatusJson;
    const na = st.nodes.find((x) => x.id === id(a))!;
    expect(na.files).toBe(5);
    expect(na.lastSeen).toBeGreaterThan(0);
    expect(st.nodes.filter((x) => x.alive)).toHaveLength(2);
    expect(st.unavailable).toEqual({ files: 3, bytes: 3 * big });
    expect(st.singleCopy.files).toBe(6);
    const text = status(false);
    expect(text).toContain("1 expired");
    expect(text).toMatch(new RegExp(`${id(a)}\\s+\\S+\\s+expired`));
    expect(text).toContain("every holder down: 3");

    // A's disk is gone for good: forget it. A live node is refused without --force.
    const forget = (node: string) => spawnSync([MCFS, "node", "forget", node, "-u", cluster.redis.url], { stdout: "pipe", stderr: "pipe" });
    const refused = forget(id(b));
    expect(refused.exitCode).toBe(1);
    expect(refused.stderr.toString()).toContain("is alive");
    const done = forget(id(a));
    expect(done.exitCode).toBe(0);
    expect(done.stdout.toString()).toContain("held 5 files; 3 of them have no copy left");
    const after = JSON.parse(status(true)) as StatusJson;
    expect(after.nodes.map((x) => x.id)).not.toContain(id(a));
    expect(after.unavailable.files).toBe(3);
    expect(after.nodes.find((x) => x.id === id(b))!.files).toBe(2);
  }, 120_000);
});

describe("dashboards/mcfs.json", () => {
  test("every metric it queries is one mcfs exports", async () => {
    const { createMetrics } = await import("../src/metrics/metrics.ts");
    const exported = new Set<string>();
    for (const mt of await createMetrics().registry.getMetricsAsJSON()) {
      exported.add(mt.name);
      if (String(mt.type) === "histogram") for (const s of ["_bucket", "_sum", "_count"]) exported.add(mt.name + s);
    }
    const dash = JSON.parse(fs.readFileSync(join(import.meta.dir, "../dashboards/mcfs.json"), "utf8")) as { panels: { targets: { expr: string }[] }[] };
    const used = new Set(dash.panels.flatMap((p) => p.targets.flatMap((t) => t.expr.match(/mcfs_[a-z_]+/g) ?? [])));
    expect(used.size).toBeGreaterThan(10);
    for (const name of used) expect({ name, exported: exported.has(name) }).toEqual({ name, exported: true });
  });
});

describe.skipIf(!!skip)("read-ahead into a RAM tier smaller than the directory", () => {
  const n = useCluster("readahead", ["a", "b"], { b: ["--metrics-port", "0", "--ram-cache-mib", "4", "--disk-cache-mib", "0"] }).nodes;

  test("a listed directory's small files come along with the first read; the bytes moved stay within 1.2x those read, and any fetched but never read are counted", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "inputs"));
    const files = Array.from({ length: 120 }, (_, i) => ({ name: `f${String(i).padStart(3, "0")}`, data: randomBytes(100 * 1024) }));
    for (const f of files) fs.writeFileSync(join(a.mnt, "inputs", f.name), f.data);
    // A task lists its inputs first: the listing is what lets B fetch a file's siblings along with it.
    expect(fs.readdirSync(join(b.mnt, "inputs")).length).toBe(files.length);
    const before = await scrape(b);
    let read = 0;
    // In an order of its own (tasks pick their inputs), not the listing's.
    const order = files.map((f, i) => ({ f, k: (i * 37) % files.length })).sort((x, y) => x.k - y.k).map((x) => x.f);
    for (const f of order) {
      const got = fs.readFileSync(join(b.mnt, "inputs", f.name));
      expect(got.equals(f.data)).toBe(true);
      read += got.length;
    }
    const after = await scrape(b);
    const moved = after("mcfs_peer_bytes_total", { direction: "received" }) - before("mcfs_peer_bytes_total", { direction: "received" });
    const unused = after("mcfs_readahead_unused_bytes_total") - before("mcfs_readahead_unused_bytes_total");
    const hits = after("mcfs_cache_hits_total") - before("mcfs_cache_hits_total");
    console.log(`read ${read} bytes on B, ${moved} moved from A (${(moved / read).toFixed(2)}x), ${unused} fetched and evicted unread`);
    // Fetched along with the first ones asked for: some opens find their copy already here (how many
    // depends on the order: read-ahead follows the listing, and this order strides through it).
    expect(hits).toBeGreaterThan(0);
    expect(moved).toBeGreaterThanOrEqual(read);
    expect(moved).toBeLessThanOrEqual(1.2 * read);
    expect(unused).toBeLessThanOrEqual(moved - read);
  }, 120_000);
});

describe.skipIf(!!skip)("reads of a node that is down", () => {
  const n = useCluster("down-holder", ["a", "b"], { b: ["--metrics-port", "0"] }).nodes;

  test("each read of its files fails with EIO at once: the refused address is not dialled again for every file (nor its files' records read for a batch, nor a warning logged for each)", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    const FILES = 100;
    fs.mkdirSync(join(a.mnt, "lost"));
    for (let i = 0; i < FILES; i++) fs.writeFileSync(join(a.mnt, "lost", `f${i}`), Buffer.alloc(4096, i));
    // Known to b (listed), so every failure below is a read's, not a lookup's.
    expect(fs.readdirSync(join(b.mnt, "lost")).length).toBe(FILES);
    await a.kill();
    const before = await scrape(b);
    for (let i = 0; i < FILES; i++) expect(errCode(() => fs.readFileSync(join(b.mnt, "lost", `f${i}`)))).toBe("EIO");
    const after = await scrape(b);
    const dialled = after("mcfs_peer_rpcs_total", { side: "client" }) - before("mcfs_peer_rpcs_total", { side: "client" });
    const batches = after("mcfs_redis_operation_duration_seconds_count", { op: "getMany" }) - before("mcfs_redis_operation_duration_seconds_count", { op: "getMany" });
    const warned = b.log().split("\n").filter((l) => /holder failed|holder refused|batched fetch failed/.test(l)).length;
    console.log(`${FILES} reads of a down holder's files: ${dialled} calls to it, ${batches} batches' records read, ${warned} warnings`);
    // Three calls a file before (a batch, the file alone, its holders asked again): a refusal now stands a second.
    expect(dialled).toBeLessThan(FILES / 4);
    expect(batches).toBeLessThan(FILES / 4);
    // Nor a warning or two each: the refusals held back are counted in the next one.
    expect(warned).toBeLessThan(FILES / 4);
    // Still a member: its own files read.
    fs.writeFileSync(join(b.mnt, "mine"), "b's own");
    expect(fs.readFileSync(join(b.mnt, "mine"), "utf8")).toBe("b's own");
  });
});
