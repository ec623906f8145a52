import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawn, spawnSync } from "bun";
import { errCode, fuseUnavailable, waitFor } from "./helpers/env.ts";
import type { TestDaemon } from "./helpers/daemon.ts";
import { scrape } from "./helpers/metrics.ts";
import { getxattr, setxattr } from "./helpers/libc.ts";
import { E } from "../src/util/errno.ts";
import { useCluster } from "./helpers/node.ts";

const skip = fuseUnavailable();
const FILES = 300;
/** Below the attribute timeout of a cluster (10 s): what the shim answers must not outlive a change that long. */
const CONVERGE_MS = 5000;

const view = (st: fs.Stats) => ({ ino: st.ino, size: st.size, mode: st.mode, nlink: st.nlink, uid: st.uid, mtimeMs: st.mtimeMs });

/**
 * Lookups of names whose records a node prefetched (a directory's listing) are answered by the FUSE
 * shim itself (native/entries.c): with the attributes JS would give, and never after a change JS knows of.
 */
describe.skipIf(!!skip)("lookups answered by the shim", () => {
  const cluster = useCluster("shim-entries", ["a", "b"], { a: ["--metrics-port", "0"], b: ["--metrics-port", "0"] });

  /** Make dir on a with FILES files of distinct sizes and modes; on b, look names up until the shim answers. Returns b's first name not looked up yet. */
  async function prefetched(dir: string): Promise<number> {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, dir));
    for (let i = 0; i < FILES; i++) {
      fs.writeFileSync(join(a.mnt, dir, `f${i}`), Buffer.alloc(i * 37, i & 255));
      fs.chmodSync(join(a.mnt, dir, `f${i}`), 0o600 + (i % 0o100));
    }
    return untilShim(b, dir, 0);
  }

  /** On d, stat dir/f<from>, dir/f<from+1>... until the shim answers one. Returns the first name not looked up yet. */
  async function untilShim(d: TestDaemon, dir: string, from: number): Promise<number> {
    let next = from;
    await waitFor("the shim answering lookups in the directory", async () => {
      const before = (await scrape(d))("mcfs_shim_lookups_total");
      fs.statSync(join(d.mnt, dir, `f${next++}`));
      return (await scrape(d))("mcfs_shim_lookups_total") > before;
    });
    return next;
  }

  test("names of a prefetched directory: looked up without JS, with the attributes the writing node sees", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const from = await prefetched("same");
    const b0 = await scrape(b);
    for (let i = from; i < FILES; i++) expect(view(fs.statSync(join(b.mnt, "same", `f${i}`)))).toEqual(view(fs.statSync(join(a.mnt, "same", `f${i}`))));
    const b1 = await scrape(b);
    const looked = FILES - from;
    expect(b1("mcfs_shim_lookups_total") - b0("mcfs_shim_lookups_total")).toBe(looked);
    expect(b1("mcfs_fuse_operations_total", { op: "lookup" }) - b0("mcfs_fuse_operations_total", { op: "lookup" })).toBe(0);
    for (let i = from; i < FILES; i += 37) expect(fs.readFileSync(join(b.mnt, "same", `f${i}`)).equals(Buffer.alloc(i * 37, i & 255))).toBe(true);
  });

  test("names another node made after this one listed the directory are read again once looked up, and answered by the shim", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "later"));
    fs.writeFileSync(join(a.mnt, "later", "first"), "1");
    expect(fs.statSync(join(b.mnt, "later", "first")).size).toBe(1);
    for (let i = 0; i < FILES; i++) {
      fs.writeFileSync(join(a.mnt, "later", `f${i}`), Buffer.alloc(i * 11, 1));
      fs.chmodSync(join(a.mnt, "later", `f${i}`), 0o640);
    }
    const from = await untilShim(b, "later", 0);
    const b0 = await scrape(b);
    for (let i = from; i < FILES; i++) expect(view(fs.statSync(join(b.mnt, "later", `f${i}`)))).toEqual(view(fs.statSync(join(a.mnt, "later", `f${i}`))));
    const b1 = await scrape(b);
    expect(b1("mcfs_shim_lookups_total") - b0("mcfs_shim_lookups_total")).toBe(FILES - from);
    expect(b1("mcfs_fuse_operations_total", { op: "lookup" }) - b0("mcfs_fuse_operations_total", { op: "lookup" })).toBe(0);
    expect(from).toBeLessThan(FILES / 10);
  });

  test("a name the shim could answer for is never answered stale: changes by this node at once, renames and unlinks elsewhere at once, other changes elsewhere well within the attribute timeout", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const from = await prefetched("changing");
    const p = (n: TestDaemon, i: number) => join(n.mnt, "changing", `f${i}`);
    const f = (k: number) => from + k;

    // Elsewhere (a): the changes b must see; a rename and an unlink return once b acknowledged them.
    fs.renameSync(p(a, f(0)), join(a.mnt, "changing", "renamed"));
    fs.unlinkSync(p(a, f(1)));
    fs.chmodSync(p(a, f(2)), 0o640);
    fs.writeFileSync(p(a, f(3)), Buffer.alloc(7777, 3));
    expect(errCode(() => fs.statSync(p(b, f(0))))).toBe("ENOENT");
    expect(fs.statSync(join(b.mnt, "changing", "renamed")).size).toBe(f(0) * 37);
    expect(errCode(() => fs.statSync(p(b, f(1))))).toBe("ENOENT");
    expect(fs.readFileSync(p(b, f(3))).equals(Buffer.alloc(7777, 3))).toBe(true);
    expect(fs.statSync(p(b, f(3))).size).toBe(7777);
    await waitFor("b seeing a's chmod", () => (fs.statSync(p(b, f(2))).mode & 0o7777) === 0o640, CONVERGE_MS);

    // Here (b): each change is seen at once, by this node and by the one that wrote the file.
    fs.chmodSync(p(b, f(4)), 0o604);
    expect(fs.statSync(p(b, f(4))).mode & 0o7777).toBe(0o604);
    fs.truncateSync(p(b, f(5)), 3);
    expect(fs.statSync(p(b, f(5))).size).toBe(3);
    fs.renameSync(p(b, f(6)), join(b.mnt, "changing", "moved-here"));
    expect(errCode(() => fs.statSync(p(b, f(6))))).toBe("ENOENT");
    expect(errCode(() => fs.statSync(p(a, f(6))))).toBe("ENOENT");
    fs.writeFileSync(p(b, f(7)), "written on b");
    expect(fs.statSync(p(b, f(7))).size).toBe(12);
    expect(fs.readFileSync(p(a, f(7)), "utf8")).toBe("written on b");
    fs.linkSync(p(b, f(8)), join(b.mnt, "changing", "second-name"));
    expect(fs.statSync(p(b, f(8))).nlink).toBe(2);
    expect(fs.statSync(join(b.mnt, "changing", "second-name")).nlink).toBe(2);

    // A file open for writing here: its size is the writer's, never the record the shim was handed.
    const fd = fs.openSync(p(b, f(10)), "r+");
    try {
      fs.writeSync(fd, Buffer.alloc(5000, 1), 0, 5000, 0);
      expect(fs.statSync(p(b, f(10))).size).toBe(Math.max(5000, f(10) * 37));
    } finally {
      fs.closeSync(fd);
    }
    await waitFor("a seeing b's chmod and truncate", () => (fs.statSync(p(a, f(4))).mode & 0o7777) === 0o604 && fs.statSync(p(a, f(5))).size === 3, CONVERGE_MS);
  });

  test("getattr of an inode whose record JS holds fresh (a directory after each create in it) is answered by the shim; a change elsewhere is seen at once", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const dir = (n: TestDaemon) => join(n.mnt, "attrs");
    const same = (st: fs.Stats) => ({ ino: st.ino, mode: st.mode, nlink: st.nlink, uid: st.uid });
    fs.mkdirSync(dir(a));
    fs.statSync(dir(a));
    const a0 = await scrape(a);
    // Each create makes the kernel drop the directory's attributes: the stat after it asks again.
    for (let i = 0; i < 20; i++) {
      fs.writeFileSync(join(dir(a), `f${i}`), "x");
      fs.statSync(dir(a));
    }
    const a1 = await scrape(a);
    expect(a1("mcfs_shim_getattrs_total") - a0("mcfs_shim_getattrs_total")).toBeGreaterThanOrEqual(20);
    expect(a1("mcfs_fuse_operations_total", { op: "getattr" }) - a0("mcfs_fuse_operations_total", { op: "getattr" })).toBe(0);
    expect(same(fs.statSync(dir(a)))).toEqual(same(fs.statSync(dir(b))));
    // Changed on b: a's next stat has it (a chmod returns once a dropped what it held).
    fs.chmodSync(dir(b), 0o711);
    expect(fs.statSync(dir(a)).mode & 0o7777).toBe(0o711);
    fs.writeFileSync(join(dir(a), "g"), "y");
    expect(fs.statSync(dir(a)).mode & 0o7777).toBe(0o711);
    // Made on b (told behind the mkdir and the create): a sees the directory's link count and times a
    // moment later; a removal (told before rmdir returns) at once.
    fs.mkdirSync(join(dir(b), "sub"));
    await waitFor("a seeing b's mkdir in the directory's link count", () => fs.statSync(dir(a)).nlink === 3, CONVERGE_MS);
    fs.rmdirSync(join(dir(b), "sub"));
    expect(fs.statSync(dir(a)).nlink).toBe(2);
    fs.writeFileSync(join(dir(b), "from-b"), "z");
    await waitFor("a seeing the directory's times after b's create", () => fs.statSync(dir(a)).mtimeMs === fs.statSync(dir(b)).mtimeMs, CONVERGE_MS);
  });

  test("ACLs, SELinux labels and file capabilities are answered as not supported (ls -l then asks once per mount, not once per file), by the shim; user attributes are kept", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.writeFileSync(join(a.mnt, "labels"), "x");
    const before = await scrape(a);
    for (const name of ["security.selinux", "system.posix_acl_access", "system.posix_acl_default", "security.capability"]) expect(getxattr(join(a.mnt, "labels"), name)).toBe(E.EOPNOTSUPP);
    expect((await scrape(a))("mcfs_fuse_operations_total", { op: "getxattr" })).toBe(before("mcfs_fuse_operations_total", { op: "getxattr" }));
    expect(setxattr(join(a.mnt, "labels"), "user.k", Buffer.from("v"))).toBe(0);
    expect(Buffer.from(getxattr(join(b.mnt, "labels"), "user.k") as Uint8Array).toString()).toBe("v");
    expect(getxattr(join(b.mnt, "labels"), "user.none")).toBe(E.ENODATA);
  });

  test("system.* attributes are not kept: a user cannot set one on a file they may not even read (the kernel leaves their checks to the filesystem)", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.writeFileSync(join(a.mnt, "roots-secret"), "x", { mode: 0o600 });
    fs.chmodSync(join(a.mnt, "roots-secret"), 0o600);
    const asNobody = (name: string) =>
      spawnSync(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, "-e", `const { setxattr } = require(${JSON.stringify(join(import.meta.dir, "helpers/libc.ts"))}); process.exit(setxattr(process.argv.at(-1), process.argv.at(-2), Buffer.from("v")))`, name, join(b.mnt, "roots-secret")]).exitCode;
    for (const name of ["system.evil", "system.nfs4_acl"]) {
      expect(asNobody(name)).toBe(E.EOPNOTSUPP);
      expect(setxattr(join(b.mnt, "roots-secret"), name, Buffer.from("v"))).toBe(E.EOPNOTSUPP);
      expect(getxattr(join(a.mnt, "roots-secret"), name)).toBe(E.EOPNOTSUPP);
    }
  });

  test("lookups on b killed mid-way by the thousand (a hostile user's processes), while a renames, removes and remakes the names: once a stops, every name on b is a's, with a's bytes, and no other", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const NAMES = 24;
    const dir = (n: TestDaemon) => join(n.mnt, "interrupted");
    fs.mkdirSync(dir(a));
    for (let i = 0; i < NAMES; i++) fs.writeFileSync(join(dir(a), `n${i}`), `first ${i}`);
    const names = Array.from({ length: NAMES }, (_, i) => `n${i}`).join(" ");
    // Each looks every name up (stat, open, read) over and over until SIGKILL ends it, most often mid-request.
    const looker = `cd "$0" && while :; do for n in ${names} gone; do cat "$n" > /dev/null 2>&1; done; done`;
    let stop = false;
    let killed = 0;
    const attack = async () => {
      while (!stop) {
        const p = spawn(["sh", "-c", looker, dir(b)], { stdout: "ignore", stderr: "ignore" });
        await Bun.sleep(1 + Math.floor(Math.random() * 6));
        p.kill("SIGKILL");
        await p.exited;
        killed++;
      }
    };
    const attackers = [attack(), attack(), attack()];
    // a's changes: each returns once b has acknowledged it (renames, unlinks) or b's next open must see it (a close).
    for (let round = 0; round < 150 || killed < 1000; round++) {
      // The attackers' turns: their kills come between a's changes.
      await Bun.sleep(0);
      const i = round % NAMES, j = (round * 7 + 3) % NAMES;
      const f = (k: number) => join(dir(a), `n${k}`);
      switch (round % 4) {
        case 0:
          if (fs.existsSync(f(i)) && i !== j) fs.renameSync(f(i), f(j));
          break;
        case 1:
          fs.rmSync(f(i), { force: true });
          break;
        case 2:
          fs.writeFileSync(f(i), `round ${round} `.repeat(1 + (round % 9)));
          break;
        case 3:
          if (fs.existsSync(f(j))) fs.linkSync(f(j), join(dir(a), `tmp${round}`));
          if (fs.existsSync(join(dir(a), `tmp${round}`))) fs.renameSync(join(dir(a), `tmp${round}`), f(i));
          break;
      }
    }
    stop = true;
    await Promise.all(attackers);
    const listing = (n: TestDaemon) => fs.readdirSync(dir(n)).sort();
    expect(listing(b)).toEqual(listing(a));
    for (let i = 0; i < NAMES; i++) {
      const onA = join(dir(a), `n${i}`), onB = join(dir(b), `n${i}`);
      if (!fs.existsSync(onA)) {
        expect(errCode(() => fs.statSync(onB))).toBe("ENOENT");
        continue;
      }
      const sa = fs.statSync(onA), sb = fs.statSync(onB);
      expect({ name: `n${i}`, ino: sb.ino, size: sb.size, nlink: sb.nlink }).toEqual({ name: `n${i}`, ino: sa.ino, size: sa.size, nlink: sa.nlink });
      expect(fs.readFileSync(onB, "utf8")).toBe(fs.readFileSync(onA, "utf8"));
    }
  });

  test("another node's creates bring this node's record of the directory up to date: its stats are answered by the shim, with no read of Redis", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const dir = (n: TestDaemon) => join(n.mnt, "touched");
    fs.mkdirSync(dir(b));
    fs.statSync(dir(a));
    const a0 = await scrape(a);
    for (let i = 0; i < 10; i++) {
      if (i === 5) fs.mkdirSync(join(dir(b), "sub"));
      else fs.writeFileSync(join(dir(b), `f${i}`), "x");
      const want = fs.statSync(dir(b));
      await waitFor(`a seeing b's change ${i} in the directory's times`, () => fs.statSync(dir(a)).mtimeMs === want.mtimeMs, CONVERGE_MS);
      const got = fs.statSync(dir(a));
      expect({ ctime: got.ctimeMs, nlink: got.nlink }).toEqual({ ctime: want.ctimeMs, nlink: want.nlink });
    }
    const a1 = await scrape(a);
    const delta = (name: string, labels?: Record<string, string>) => a1(name, labels) - a0(name, labels);
    expect(delta("mcfs_redis_operations_total", { op: "get" })).toBe(0);
    expect(delta("mcfs_fuse_operations_total", { op: "getattr" })).toBe(0);
    expect(delta("mcfs_shim_getattrs_total")).toBeGreaterThanOrEqual(10);
    // A change that is not a create still drops what a held: b's chmod is seen at once.
    fs.chmodSync(dir(b), 0o700);
    expect(fs.statSync(dir(a)).mode & 0o7777).toBe(0o700);
  });
});
