import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import { dirname, join } from "node:path";
import { spawn } from "bun";
import { fuseUnavailable, waitFor } from "./helpers/env.ts";
import type { TestDaemon } from "./helpers/daemon.ts";
import { scrape } from "./helpers/metrics.ts";
import { useCluster } from "./helpers/node.ts";

const skip = fuseUnavailable();
const SLOW = "nodes did not acknowledge a change in time";

/** Renames and unlinks wait for every live node's acknowledgement: none may be lost, a stopped node costs one wait. */
describe.skipIf(!!skip)("acknowledgements of changes", () => {
  const cluster = useCluster("acks", ["a", "b", "c"], { b: ["--metrics-port", "0"] });

  test("no acknowledgement is lost, also for the first change after the node list went stale", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "idle"));
    for (let i = 0; i < 3; i++) {
      // Past the second after which a node refreshes its list of live peers (where acks got lost).
      await Bun.sleep(1100);
      fs.writeFileSync(join(a.mnt, "idle", `f${i}`), "x");
      fs.renameSync(join(a.mnt, "idle", `f${i}`), join(a.mnt, "idle", `g${i}`));
      fs.unlinkSync(join(a.mnt, "idle", `g${i}`));
    }
    for (let i = 0; i < 100; i++) {
      fs.writeFileSync(join(b.mnt, "idle", `h${i}`), "x");
      fs.unlinkSync(join(b.mnt, "idle", `h${i}`));
    }
    for (const n of cluster.nodes) expect(n.log()).not.toContain(SLOW);
  });

  test("a stopped node is waited for once, not by every change; it is waited for again once it answers", async () => {
    const [a, b, c] = cluster.nodes as [TestDaemon, TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "stopped"));
    for (let i = 0; i < 20; i++) fs.writeFileSync(join(a.mnt, "stopped", `f${i}`), "x");
    c.proc.kill("SIGSTOP");
    try {
      for (let i = 0; i < 20; i++) fs.unlinkSync(join(a.mnt, "stopped", `f${i}`));
      for (let i = 0; i < 5; i++) fs.mkdirSync(join(b.mnt, "stopped", `d${i}`));
      for (let i = 0; i < 5; i++) fs.rmdirSync(join(b.mnt, "stopped", `d${i}`));
    } finally {
      c.proc.kill("SIGCONT");
    }
    const slow = (n: TestDaemon) => n.log().split("\n").filter((l) => l.includes(SLOW)).length;
    expect(slow(a)).toBe(1);
    expect(slow(b)).toBe(1);
    // Once c answers again, it is waited for again (and it saw every change).
    await waitFor("c to answer again", () => a.log().includes("nodes acknowledge changes again"));
    expect(fs.readdirSync(join(c.mnt, "stopped"))).toEqual([]);
  });

  test("a reader's opens of a file it watches ask nothing of Redis, and still read each new version another node wrote (close-to-open)", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "watched"));
    const at = (n: TestDaemon) => join(n.mnt, "watched", "f");
    const m0 = await scrape(b);
    const rounds = 30;
    for (let i = 0; i < rounds; i++) {
      // A new size each time: a stale record would cut or pad the read.
      const body = `version ${i};`.repeat(i + 1);
      fs.writeFileSync(at(a), body);
      expect(fs.readFileSync(at(b), "utf8")).toBe(body);
      expect(fs.readFileSync(at(b), "utf8")).toBe(body);
      expect(fs.readFileSync(at(b), "utf8")).toBe(body);
    }
    const m1 = await scrape(b);
    // The first open of each version asks Redis (and watches from then on); the two after it do not
    // (JS answers them from the watch, or B's shim from the grant JS made: see shim-opens.test.ts).
    const unasked = (m: typeof m0) => m("mcfs_watched_opens_total") + m("mcfs_shim_opens_total");
    expect(unasked(m1) - unasked(m0)).toBeGreaterThanOrEqual(2 * rounds - 2);
    expect(m1("mcfs_redis_operations_total", { op: "recordAndHolders" }) - m0("mcfs_redis_operations_total", { op: "recordAndHolders" })).toBeLessThanOrEqual(rounds + 2);
  });

  test("a stopped watcher delays a new version once, and reads that version as soon as it runs again", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "paused"));
    const at = (n: TestDaemon) => join(n.mnt, "paused", "f");
    fs.writeFileSync(at(a), "before");
    expect(fs.readFileSync(at(b), "utf8")).toBe("before");
    expect(fs.readFileSync(at(b), "utf8")).toBe("before");
    let took: number;
    b.proc.kill("SIGSTOP");
    try {
      const t0 = Date.now();
      fs.writeFileSync(at(a), "after, and longer");
      took = Date.now() - t0;
      // b watches it no more: the next version does not wait for it.
      const t1 = Date.now();
      fs.writeFileSync(at(a), "after, and longer still");
      expect(Date.now() - t1).toBeLessThan(took);
    } finally {
      b.proc.kill("SIGCONT");
    }
    // Its feed was not shown current while it was stopped: this open asks Redis, whatever it heard yet.
    expect(fs.readFileSync(at(b), "utf8")).toBe("after, and longer still");
    expect(took).toBeGreaterThanOrEqual(400);
  });

  // A's rename stops waiting for the stopped B and returns; B's kernel still holds f for the moved
  // file. Opens by f queued meanwhile reach B together when it runs again: the first is refused
  // (ESTALE, f dropped from the kernel), and the others, which walked f before that drop, must be
  // refused too, not let into the file now named g.
  test("opens queued on a stopped node by a name another node renamed away meanwhile never reach the moved file", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "movedaway"));
    const at = (n: TestDaemon, name: string) => join(n.mnt, "movedaway", name);
    const rounds = 10;
    for (let i = 0; i < rounds; i++) {
      fs.writeFileSync(at(a, `f${i}`), `orig ${i}`);
      expect(fs.readFileSync(at(b, `f${i}`), "utf8")).toBe(`orig ${i}`);
    }
    const OPEN = `const fs = require("fs"); const [how, path, data] = process.argv.slice(-3);
      try {
        if (how === "read") console.log(JSON.stringify({ read: fs.readFileSync(path, "utf8") }));
        else if (how === "trunc") { const fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_TRUNC); fs.writeSync(fd, data); fs.closeSync(fd); console.log("{}"); }
        else { fs.writeFileSync(path, data); console.log("{}"); }
      } catch (e) { console.log(JSON.stringify({ code: e.code })); }`;
    const outcomes: Record<string, number> = {};
    for (let i = 0; i < rounds; i++) {
      const opens: Bun.Subprocess<"ignore", "pipe", "inherit">[] = [];
      // Fresh in B's kernel.
      fs.statSync(at(b, `f${i}`));
      b.proc.kill("SIGSTOP");
      try {
        fs.renameSync(at(a, `f${i}`), at(a, `g${i}`));
        fs.writeFileSync(at(a, `f${i}`), `second ${i}`);
        for (const how of ["read", "trunc", "write"]) opens.push(Bun.spawn([process.execPath, "-e", OPEN, how, at(b, `f${i}`), `${how} ${i}`], { stdout: "pipe" }));
        // Each blocked in its open (openat) on B.
        await waitFor("the opens to reach B", () => opens.every((p) => fs.readFileSync(`/proc/${p.pid}/syscall`, "utf8").startsWith("257 ")));
      } finally {
        b.proc.kill("SIGCONT");
      }
      for (const p of opens) {
        const got = JSON.parse(await new Response(p.stdout).text()) as { read?: string; code?: string };
        expect(await p.exited).toBe(0);
        expect(got.read).not.toBe(`orig ${i}`);
        const k = got.code ?? "ok";
        outcomes[k] = (outcomes[k] ?? 0) + 1;
      }
      for (const n of [a, b]) expect(fs.readFileSync(at(n, `g${i}`), "utf8")).toBe(`orig ${i}`);
    }
    // Refused, each open looked f up again and opened A's new f.
    expect(outcomes).toEqual({ ok: 3 * rounds });
  });

  /** Whether a lookup on n of a name missing from dir was answered without asking Redis (n watches dir). */
  async function answersAbsent(n: TestDaemon, dir: string, name: string): Promise<boolean> {
    const m0 = await scrape(n);
    expect(() => fs.statSync(join(dir, name))).toThrow(/ENOENT/);
    const m1 = await scrape(n);
    return m1("mcfs_redis_operations_total", { op: "lookup" }) === m0("mcfs_redis_operations_total", { op: "lookup" });
  }

  test("a node watching a directory answers lookups of names missing there without Redis, and still finds each name another node made (close-to-open)", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "names"));
    const dir = join(b.mnt, "names");
    const slow = () => cluster.nodes.map((n) => n.log().split(SLOW).length);
    const slowBefore = slow();
    let k = 0;
    const watching = () => waitFor("b to watch the directory", () => answersAbsent(b, dir, `missing${k++}`));
    await watching();
    const m0 = await scrape(b);
    let without = 0;
    for (let i = 0; i < 10; i++) if (await answersAbsent(b, dir, `missing${k++}`)) without++;
    // A node whose feed was not shown current lately (its proofs late, on a loaded machine) asks Redis.
    expect(without).toBeGreaterThanOrEqual(8);
    // Answered by the FUSE shim itself, from the listing JS handed it.
    expect((await scrape(b))("mcfs_shim_absent_total") - m0("mcfs_shim_absent_total")).toBeGreaterThanOrEqual(8);
    for (let i = 0; i < 5; i++) {
      // Made on A while B watches: A's close returns once B heard of it, so B's next lookup finds it.
      const body = `new ${i};`.repeat(i + 1);
      fs.writeFileSync(join(a.mnt, "names", `new${i}`), body);
      expect(fs.readFileSync(join(dir, `new${i}`), "utf8")).toBe(body);
      fs.mkdirSync(join(a.mnt, "names", `sub${i}`));
      expect(fs.statSync(join(dir, `sub${i}`)).isDirectory()).toBe(true);
      // Each name made elsewhere ends the watch; B watches again once the directory is quiet.
      expect(await answersAbsent(b, dir, `missing${k++}`)).toBe(false);
      await watching();
    }
    expect(slow()).toEqual(slowBefore);
  });

  test("a stopped watcher of a directory delays a new name there once, and finds it (and those made since) as soon as it runs again", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "stopnames"));
    const dir = join(b.mnt, "stopnames");
    let k = 0;
    await waitFor("b to watch the directory", () => answersAbsent(b, dir, `missing${k++}`));
    let took: number;
    b.proc.kill("SIGSTOP");
    try {
      const t0 = Date.now();
      fs.writeFileSync(join(a.mnt, "stopnames", "f"), "made while b was stopped");
      took = Date.now() - t0;
      const t1 = Date.now();
      fs.writeFileSync(join(a.mnt, "stopnames", "g"), "and another");
      expect(Date.now() - t1).toBeLessThan(took);
    } finally {
      b.proc.kill("SIGCONT");
    }
    expect(took).toBeGreaterThanOrEqual(400);
    // Its feed was not shown current while it was stopped: these lookups ask Redis, whatever it heard yet.
    expect(fs.readFileSync(join(dir, "f"), "utf8")).toBe("made while b was stopped");
    expect(fs.readFileSync(join(dir, "g"), "utf8")).toBe("and another");
  });

  test("files fetched ahead are watched from the read of their records: their first opens ask nothing of Redis, and a version written since is read", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "ahead"));
    const at = (n: TestDaemon, i: number) => join(n.mnt, "ahead", `f${String(i).padStart(2, "0")}`);
    for (let i = 0; i < 40; i++) fs.writeFileSync(at(a, i), `first ${i}`);
    const m0 = await scrape(b);
    expect(fs.readFileSync(at(b, 0), "utf8")).toBe("first 0");
    // Once the read-ahead has fetched (and watched) the next ones, some are rewritten on A.
    await waitFor("read-ahead", async () => (await scrape(b))("mcfs_cache_files", { tier: "ram" }) - m0("mcfs_cache_files", { tier: "ram" }) >= 10);
    for (let i = 1; i < 40; i += 3) fs.writeFileSync(at(a, i), `second ${i}, longer`);
    for (let i = 1; i < 40; i++) expect(fs.readFileSync(at(b, i), "utf8")).toBe(i % 3 === 1 ? `second ${i}, longer` : `first ${i}`);
    const m1 = await scrape(b);
    // Answered from the watch through JS, or by the shim from the grant made as the copy landed.
    const watched = (m: typeof m0) => m("mcfs_watched_opens_total") + m("mcfs_shim_opens_total");
    expect(watched(m1) - watched(m0)).toBeGreaterThanOrEqual(5);
    // Those A rewrote (13) and the first are read from Redis; the others are not.
    expect(m1("mcfs_redis_operations_total", { op: "recordAndHolders" }) - m0("mcfs_redis_operations_total", { op: "recordAndHolders" })).toBeLessThanOrEqual(20);
  });

  // B's first access of a name starts up to 1.5 ms before or after A's chmod of it. Its reply can
  // reach B's kernel just after B heard of the chmod (the kernel makes the inode once the caller runs
  // again), B can hear it between making its reply and sending it, and an open can read the record
  // just before B heard of it (the handle's getattrs answer with that record).
  const firstAccess: [string, (p: string) => Promise<unknown>][] = [
    ["lookup (lstat)", (p) => fsp.lstat(p)],
    ["listing with attributes (readdirplus) of its directory", (p) => fsp.readdir(dirname(p), { withFileTypes: true })],
    ["open, and fstat through it", async (p) => {
      const h = await fsp.open(p, "r");
      try {
        await h.stat();
      } finally {
        await h.close();
      }
    }],
  ];
  test.each(firstAccess)("B's first %s of a name, racing A's chmod of it: once the chmod returns, B's stat has the new mode", async (kind, access) => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const dir = `first-${kind.split(" ")[0]}`;
    // A directory each: B's first listing of one is the first it hears of its file.
    const N = 400, name = (i: number) => `d${i}/f`;
    for (let i = 0; i < N; i++) {
      fs.mkdirSync(join(a.mnt, dir, `d${i}`), { recursive: true });
      fs.closeSync(fs.openSync(join(a.mnt, dir, name(i)), "w", 0o644));
    }
    const mode = (p: string) => fs.lstatSync(p).mode & 0o7777;
    const stale: { name: string; b: number; offsetMs: number }[] = [];
    // Two busy processes: a woken caller then waits for a CPU more often (a loaded CI machine).
    const hogs = [0, 1].map(() => spawn([process.execPath, "-e", "for (;;) {}"], { stdout: "ignore", stderr: "ignore" }));
    try {
      for (let i = 0; i < N; i++) {
        const offsetMs = ((i % 7) - 3) * 0.5;
        const spin = (ms: number) => {
          for (const t = performance.now(); performance.now() - t < ms; );
        };
        const onB = () => access(join(b.mnt, dir, name(i))).catch(() => undefined);
        const chmod = () => fsp.chmod(join(a.mnt, dir, name(i)), 0o600);
        let accessed: Promise<unknown>, changed: Promise<unknown>;
        if (offsetMs < 0) {
          accessed = onB();
          spin(-offsetMs);
          changed = chmod();
        } else {
          changed = chmod();
          spin(offsetMs);
          accessed = onB();
        }
        await changed;
        const got = mode(join(b.mnt, dir, name(i)));
        await accessed;
        if (got !== 0o600) stale.push({ name: name(i), b: got, offsetMs });
      }
    } finally {
      for (const h of hogs) h.kill("SIGKILL");
      await Promise.all(hogs.map((h) => h.exited));
    }
    expect(stale).toEqual([]);
  });
});
