import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawn, spawnSync } from "bun";
import { fuseUnavailable, waitFor } from "./helpers/env.ts";
import type { TestDaemon } from "./helpers/daemon.ts";
import { scrape } from "./helpers/metrics.ts";
import { useCluster } from "./helpers/node.ts";

const skip = fuseUnavailable();

/** Version i of a file: its size and bytes tell which it is (a mix of two is not one of them). */
const version = (i: number) => Buffer.alloc(3000 + ((i * 7919) % 60000), i % 251);
const isVersion = (b: Buffer, i: number) => b.equals(version(i));

/** Read-only opens B's FUSE shim answers itself, from grants of files B watches (native/grants.c). */
describe.skipIf(!!skip)("opens answered by the shim", () => {
  const cluster = useCluster("shim-opens", ["a", "b"], { b: ["--metrics-port", "0"] });
  const n = cluster.nodes;
  const shimOpens = async (d: TestDaemon) => (await scrape(d))("mcfs_shim_opens_total");

  test("after B's first open of a file A wrote, B's shim answers the next ones; each version A closes is what B reads next, whole", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "g"));
    const f = (d: TestDaemon) => join(d.mnt, "g", "f");
    fs.writeFileSync(f(a), version(0));
    expect(isVersion(fs.readFileSync(f(b)), 0)).toBe(true);
    // From B's first proof that its feed is current after its mount on (every 100 ms).
    const first = await shimOpens(b);
    await waitFor("B's shim to answer an open", async () => isVersion(fs.readFileSync(f(b)), 0) && (await shimOpens(b)) > first);
    const before = await shimOpens(b);
    for (let k = 0; k < 20; k++) expect(isVersion(fs.readFileSync(f(b)), 0)).toBe(true);
    // While B's feed is shown current (it is, on a machine this idle, but for a stall): most of them.
    expect(await shimOpens(b)).toBeGreaterThanOrEqual(before + 15);
    for (let i = 1; i <= 40; i++) {
      fs.writeFileSync(f(a), version(i));
      // Twice: the first open (JS) grants the file again, the second is the shim's.
      for (let k = 0; k < 2; k++) {
        const got = fs.readFileSync(f(b));
        expect({ i, k, size: got.length, ok: isVersion(got, i) }).toEqual({ i, k, size: version(i).length, ok: true });
      }
      expect(fs.statSync(f(b)).size).toBe(version(i).length);
    }
  });

  test("files A wrote that B fetched ahead of its reader: B's shim answers the first open of each with A's bytes, and one A rewrote since is read at its new version", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    const files = 40;
    const f = (d: TestDaemon, i: number) => join(d.mnt, "ahead", `f${i}`);
    fs.mkdirSync(join(a.mnt, "ahead"));
    for (let i = 0; i < files; i++) fs.writeFileSync(f(a, i), version(i));
    const ram = async () => (await scrape(b))("mcfs_cache_files", { tier: "ram" });
    const cached = await ram();
    // The first read fetches the others along with it (read-ahead), each granted to the shim as it lands.
    expect(isVersion(fs.readFileSync(f(b, 0)), 0)).toBe(true);
    await waitFor("B's copies of the others", async () => (await ram()) >= cached + files);
    // Heard by B before A's close returns: its grant goes, and B's next open reads the new version.
    fs.writeFileSync(f(a, 5), version(100));
    const before = await shimOpens(b);
    for (let i = 1; i < files; i++) {
      const want = i === 5 ? 100 : i;
      const got = fs.readFileSync(f(b, i));
      expect({ i, size: got.length, ok: isVersion(got, want) }).toEqual({ i, size: version(want).length, ok: true });
    }
    // While B's feed is shown current (it is, on a machine this idle, but for a stall): most of them.
    expect(await shimOpens(b)).toBeGreaterThanOrEqual(before + files - 10);
  });

  test("a writer on B of a file B's shim was answering opens of: B's readers read what it wrote before its close, as without the shim", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    const f = (d: TestDaemon) => join(d.mnt, "g", "w");
    fs.mkdirSync(join(a.mnt, "g"), { recursive: true });
    fs.writeFileSync(f(a), Buffer.alloc(8192, 1));
    for (let k = 0; k < 3; k++) expect(fs.readFileSync(f(b)).equals(Buffer.alloc(8192, 1))).toBe(true);
    const fd = fs.openSync(f(b), "r+");
    try {
      fs.writeSync(fd, Buffer.alloc(4096, 2), 0, 4096, 0);
      const want = Buffer.concat([Buffer.alloc(4096, 2), Buffer.alloc(4096, 1)]);
      for (let k = 0; k < 3; k++) expect(fs.readFileSync(f(b)).equals(want)).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
    expect(fs.readFileSync(f(a)).subarray(0, 4096).equals(Buffer.alloc(4096, 2))).toBe(true);
  });

  test.skipIf(!Bun.which("setpriv"))("a grant made by one user's open lets no other user in: once A's chmod or chown returns, B's opens by another user follow the new mode", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "p"), { recursive: true, mode: 0o755 });
    const f = (d: TestDaemon) => join(d.mnt, "p", "secret");
    fs.writeFileSync(f(a), "only root's", { mode: 0o600 });
    const nobodyReads = () => spawnSync(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "cat", f(b)], { stdout: "pipe", stderr: "pipe" }).exitCode === 0;
    // Root's opens on B: the first through JS (which grants the file), the rest the shim's.
    const rootReads = async () => {
      const before = await shimOpens(b);
      await waitFor("B's shim to answer root's open", async () => fs.readFileSync(f(b), "utf8").length > 0 && (await shimOpens(b)) > before);
    };
    await rootReads();
    expect(nobodyReads()).toBe(false);
    for (const [change, nobodyMay] of [[() => fs.chmodSync(f(a), 0o644), true], [() => fs.chmodSync(f(a), 0o600), false], [() => fs.chownSync(f(a), 65534, 65534), true], [() => fs.chownSync(f(a), 0, 0), false]] as const) {
      change();
      await rootReads();
      expect(nobodyReads()).toBe(nobodyMay);
    }
  });

  test("B killed (kill -9) while handles its shim opened are held: after B's restart, B reads what A wrote since, and the held handles close", async () => {
    const a = n[0]!;
    let b = n[1]!;
    fs.mkdirSync(join(a.mnt, "k"), { recursive: true });
    const f = (d: TestDaemon) => join(d.mnt, "k", "held");
    fs.writeFileSync(f(a), version(1));
    const before = await shimOpens(b);
    await waitFor("B's shim to answer an open", async () => isVersion(fs.readFileSync(f(b)), 1) && (await shimOpens(b)) > before);
    const fds = [0, 1, 2].map(() => fs.openSync(f(b), "r"));
    expect(await shimOpens(b)).toBeGreaterThanOrEqual(before + 2);
    await b.kill();
    // The connection is gone: a close of what the dead node opened returns (the kernel ends the handle).
    for (const fd of fds) fs.closeSync(fd);
    b = n[1] = await cluster.start("b");
    fs.writeFileSync(f(a), version(2));
    for (let k = 0; k < 3; k++) expect(isVersion(fs.readFileSync(f(b)), 2)).toBe(true);
  });
  // A writer's close returns before its release reaches A: the next writer's open may come first (OpenFiles.writing).
  test("A rewriting a file as fast as it can while B opens and reads it as fast as it can: every read on B is one whole version, and the versions B reads never go back", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    const f = (d: TestDaemon) => join(d.mnt, "g", "race");
    fs.mkdirSync(join(a.mnt, "g"), { recursive: true });
    fs.writeFileSync(f(a), version(0));
    const rounds = 300;
    const writer = spawn([process.execPath, "-e", `const fs = require("fs"); const [f, n] = process.argv.slice(-2);
      const version = ${version.toString()};
      for (let i = 1; i <= +n; i++) fs.writeFileSync(f, version(i));`, f(a), String(rounds)], { stderr: "inherit" });
    let last = 0;
    const bad: string[] = [];
    while (writer.exitCode === null) {
      const got = fs.readFileSync(f(b));
      const i = got.length ? got[0]! : -1;
      // Fill bytes wrap at 251: the version read is the first at or after the last one with that fill.
      let v = last;
      while (v <= rounds && !(v % 251 === i && version(v).length === got.length)) v++;
      if (v > rounds || !isVersion(got, v)) bad.push(`${got.length} bytes of ${i} after version ${last} (bytes of each value: ${JSON.stringify(Object.entries(got.reduce<Record<number, number>>((m, x) => ((m[x] = (m[x] ?? 0) + 1), m), {})))})`);
      else last = v;
      await Bun.sleep(0);
    }
    expect(await writer.exited).toBe(0);
    expect(bad).toEqual([]);
    expect(isVersion(fs.readFileSync(f(b)), rounds)).toBe(true);
  });
});
