import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { spawnSync } from "bun";
import { MCFS, fuseUnavailable, waitFor } from "./helpers/env.ts";
import type { TestDaemon } from "./helpers/daemon.ts";
import { useCluster } from "./helpers/node.ts";
import { setxattr } from "./helpers/libc.ts";
import { E } from "../src/util/errno.ts";

const skip = fuseUnavailable();
const FAST = ["--replica-grace", "1", "--replica-check", "0.5"];

const nodeId = (d: TestDaemon) => fs.readFileSync(join(d.root, ".mcfs/node-id"), "utf8").trim();

/** Replicas: copies of each file on other nodes' disks, made after its close and again after a node is lost. */
describe.skipIf(!!skip)("replicas", () => {
  const cluster = useCluster("replicas", ["a", "b", "c"], { a: ["--replicas", "2", ...FAST], b: FAST, c: FAST });
  const cli = (...args: string[]) => cluster.redis.cli(...args);
  const inoOf = async (dir: number, name: string) => Number((await cli("HGET", `mcfs:d:${dir}`, name)).split(":")[0]);
  /** Nodes holding ino's current version on their disk. */
  const holders = async (ino: number) => {
    const v = await cli("HGET", `mcfs:i:${ino}`, "v");
    const loc = (await cli("HGETALL", `mcfs:loc:${ino}`)).split("\n").filter(Boolean);
    const out: string[] = [];
    for (let i = 0; i + 1 < loc.length; i += 2) if (loc[i + 1] === v) out.push(loc[i]!);
    return out.sort();
  };
  const status = () => JSON.parse(spawnSync([MCFS, "status", "-u", cluster.redis.url, "--json"], { stdout: "pipe" }).stdout.toString()) as { underReplicated: { files: number }; replicaBacklog: number };

  test("--replicas 2: each file closed on A is on a second node's disk; lose A and its disk, every file reads whole, and is back to two copies", async () => {
    const [a, b, c] = cluster.nodes as [TestDaemon, TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "data"));
    const dir = await inoOf(1, "data");
    const files = new Map<string, Buffer>();
    for (let i = 0; i < 30; i++) files.set(`f${i}`, randomBytes(i === 0 ? 3 << 20 : 100 + i * 997));
    for (const [name, data] of files) fs.writeFileSync(join(a.mnt, "data", name), data);
    const inos = await Promise.all([...files.keys()].map((n) => inoOf(dir, n)));
    const idA = nodeId(a);
    await waitFor("a second copy of every file", async () => (await Promise.all(inos.map(holders))).every((h) => h.length === 2 && h.includes(idA)), 30_000);
    // The copies are on the other nodes' disks, byte for byte.
    for (const [name, data] of files) {
      const on = [b, c].filter((n) => fs.existsSync(join(n.root, "data", name)));
      expect(on.length).toBe(1);
      expect(fs.readFileSync(join(on[0]!.root, "data", name)).equals(data)).toBe(true);
    }
    expect(status().underReplicated.files).toBe(0);

    await a.kill();
    fs.rmSync(a.root, { recursive: true, force: true });
    for (const [name, data] of files) {
      expect(fs.readFileSync(join(b.mnt, "data", name)).equals(data)).toBe(true);
      expect(fs.readFileSync(join(c.mnt, "data", name)).equals(data)).toBe(true);
    }
    // A's heartbeat runs out, then the grace: B and C each hold every file.
    const idB = nodeId(b), idC = nodeId(c);
    await waitFor("two copies again, on B and C", async () => (await Promise.all(inos.map(holders))).every((h) => h.includes(idB) && h.includes(idC)), 60_000);
    for (const [name, data] of files) for (const n of [b, c]) expect(fs.readFileSync(join(n.root, "data", name)).equals(data)).toBe(true);
    await waitFor("status: nothing under-replicated", () => status().underReplicated.files === 0 && status().replicaBacklog === 0);
  }, 120_000);
});

/** A directory's user.mcfs.replicas asks for its files' copies; `mcfs repair` makes what is missing. */
describe.skipIf(!!skip)("replicas per directory", () => {
  // Nodes do not look for missing copies themselves here: only the writers' requests and `mcfs repair` make them.
  const SLOW = ["--replica-check", "3600"];
  const cluster = useCluster("replicas-dir", ["a", "b", "c"], { a: SLOW, b: SLOW, c: SLOW });
  const cli = (...args: string[]) => cluster.redis.cli(...args);
  const inoOf = async (dir: number, name: string) => Number((await cli("HGET", `mcfs:d:${dir}`, name)).split(":")[0]);
  const holderCount = async (ino: number) => {
    const v = await cli("HGET", `mcfs:i:${ino}`, "v");
    const loc = (await cli("HGETALL", `mcfs:loc:${ino}`)).split("\n").filter(Boolean);
    return loc.filter((x, i) => i % 2 === 1 && x === v).length;
  };

  test("files under a directory marked 3 get three copies; elsewhere one; marking a directory later and `mcfs repair` makes the missing ones", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "three"));
    expect(setxattr(join(a.mnt, "three"), "user.mcfs.replicas", Buffer.from("3"))).toBe(0);
    fs.mkdirSync(join(a.mnt, "three", "sub"));
    fs.mkdirSync(join(a.mnt, "plain"));
    for (let i = 0; i < 5; i++) {
      // t0 has a second name, made before its close: every copy has the bytes under both.
      const fd = fs.openSync(join(a.mnt, "three", "sub", `t${i}`), "w");
      if (i === 0) fs.linkSync(join(a.mnt, "three", "sub", "t0"), join(a.mnt, "three", "t0-link"));
      fs.writeSync(fd, randomBytes(5000 + i));
      fs.closeSync(fd);
    }
    for (let i = 0; i < 5; i++) fs.writeFileSync(join(b.mnt, "plain", `p${i}`), randomBytes(7000 + i));
    const sub = await inoOf(await inoOf(1, "three"), "sub"), plain = await inoOf(1, "plain");
    const three = await Promise.all([0, 1, 2, 3, 4].map((i) => inoOf(sub, `t${i}`)));
    const ones = await Promise.all([0, 1, 2, 3, 4].map((i) => inoOf(plain, `p${i}`)));
    await waitFor("three copies of each file under three/", async () => (await Promise.all(three.map(holderCount))).every((n) => n === 3));
    const t0 = fs.readFileSync(join(a.mnt, "three", "sub", "t0"));
    for (const n of cluster.nodes) {
      expect(fs.readFileSync(join(n.root, "three", "sub", "t0")).equals(t0)).toBe(true);
      expect(fs.readFileSync(join(n.root, "three", "t0-link")).equals(t0)).toBe(true);
    }
    expect(await Promise.all(ones.map(holderCount))).toEqual([1, 1, 1, 1, 1]);
    expect(await cli("KEYS", "mcfs:copy:*")).toBe("");

    // A big file renamed as soon as it is closed, while its copy is on its way: the copy ends up under
    // the new name, and nothing stays under the old one.
    const big = randomBytes(48 << 20);
    fs.writeFileSync(join(a.mnt, "three", "sub", "big"), big);
    // Renamed once a copy is on its way (a partial file on another node's disk).
    const arriving = (root: string) => fs.existsSync(join(root, ".mcfs", "partial")) && fs.readdirSync(join(root, ".mcfs", "partial")).length > 0;
    await waitFor("a copy on its way", () => cluster.nodes.slice(1).some((n) => arriving(n.root)), 30_000);
    fs.renameSync(join(a.mnt, "three", "sub", "big"), join(a.mnt, "three", "sub", "big-renamed"));
    const bigIno = await inoOf(sub, "big-renamed");
    await waitFor("three copies of the renamed file", async () => (await holderCount(bigIno)) === 3, 60_000);
    for (const n of cluster.nodes) {
      expect(fs.existsSync(join(n.root, "three", "sub", "big"))).toBe(false);
      expect(fs.readFileSync(join(n.root, "three", "sub", "big-renamed")).equals(big)).toBe(true);
    }

    // A directory's owner may not multiply everyone's disk use: above the cluster-wide count (1 here) only root may go.
    fs.chownSync(join(b.mnt, "plain"), 65534, 65534);
    const asNobody = (v: string) => spawnSync(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, "-e", `const { setxattr } = require(${JSON.stringify(join(import.meta.dir, "helpers/libc.ts"))}); process.exit(setxattr(process.argv.at(-2), "user.mcfs.replicas", Buffer.from(process.argv.at(-1))))`, join(b.mnt, "plain"), v]).exitCode;
    expect([asNobody("2"), asNobody("16"), asNobody("1"), asNobody("two")]).toEqual([E.EPERM, E.EPERM, 0, E.EINVAL]);
    expect(setxattr(join(b.mnt, "plain"), "user.mcfs.replicas", Buffer.from("17"))).toBe(E.EINVAL);
    expect(setxattr(join(b.mnt, "plain"), "user.mcfs.replicas", Buffer.from("2"))).toBe(0);
    const r = spawnSync([MCFS, "repair", "-u", cluster.redis.url], { stdout: "pipe", stderr: "pipe" });
    expect({ code: r.exitCode, out: r.stdout.toString() }).toMatchObject({ code: 0, out: expect.stringContaining("5 with too few copies: 5 copies asked for") });
    await waitFor("two copies of each file under plain/", async () => (await Promise.all(ones.map(holderCount))).every((n) => n === 2));
  }, 60_000);
});

/** kill -9 of the node a copy is being made on, in the middle of it: nothing half-made is kept or served, and the copy is made again. */
describe.skipIf(!!skip)("a copy target killed mid-copy", () => {
  const cluster = useCluster("replicas-kill", ["a", "b", "c"], { a: ["--replicas", "2", ...FAST], b: FAST, c: FAST });
  const cli = (...args: string[]) => cluster.redis.cli(...args);
  const holders = async (ino: number) => {
    const v = await cli("HGET", `mcfs:i:${ino}`, "v");
    const loc = (await cli("HGETALL", `mcfs:loc:${ino}`)).split("\n").filter(Boolean);
    return loc.filter((x, i) => i % 2 === 0 && loc[i + 1] === v);
  };
  const partials = (root: string) => {
    const d = join(root, ".mcfs", "partial");
    return fs.existsSync(d) ? fs.readdirSync(d) : [];
  };

  test("the target's partial copy is gone after its restart, it is never listed meanwhile, every node reads the file whole, and two copies are made again", async () => {
    const [a] = cluster.nodes as [TestDaemon];
    const big = randomBytes(96 << 20);
    fs.writeFileSync(join(a.mnt, "big"), big);
    const ino = Number((await cli("HGET", "mcfs:d:1", "big")).split(":")[0]);
    await waitFor("a copy on its way to B or C", () => cluster.nodes.slice(1).some((n) => partials(n.root).length > 0), 30_000);
    const k = cluster.nodes.findIndex((n, i) => i > 0 && partials(n.root).length > 0);
    const target = cluster.nodes[k]!;
    const targetId = nodeId(target);
    const cut = `${target.proc.pid}-`;
    await target.kill();
    // Cut short: the target is not a holder, and the others read the whole file.
    expect(await holders(ino)).not.toContain(targetId);
    const other = cluster.nodes[3 - k]!;
    expect(fs.readFileSync(join(other.mnt, "big")).equals(big)).toBe(true);
    expect(fs.readFileSync(join(a.mnt, "big")).equals(big)).toBe(true);

    const back = (cluster.nodes[k] = await cluster.start(k === 1 ? "b" : "c"));
    // Its own partial copy is gone (one the restarted node may have begun since has another name).
    expect(partials(back.root).filter((f) => f.startsWith(cut))).toEqual([]);
    // The order stayed on the killed node's list: it makes the copy at its restart, or (gone past the
    // grace meanwhile) another node is asked for it; not both.
    await waitFor("two copies of the file again", async () => (await holders(ino)).length === 2);
    for (const id of await holders(ino)) {
      const n = cluster.nodes.find((x) => nodeId(x) === id)!;
      expect(fs.readFileSync(join(n.root, "big")).equals(big)).toBe(true);
    }
    expect(fs.readFileSync(join(back.mnt, "big")).equals(big)).toBe(true);
    await waitFor("no partial copy left on the restarted node", () => partials(back.root).length === 0);
  }, 120_000);
});
