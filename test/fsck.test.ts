import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "bun";
import { MCFS, freePort, fuseUnavailable, waitFor } from "./helpers/env.ts";
import type { TestDaemon } from "./helpers/daemon.ts";
import { useCluster } from "./helpers/node.ts";

const skip = fuseUnavailable();

interface FsckJson {
  found: Record<string, Record<string, unknown[]>>;
  left?: { cluster: Record<string, { path?: string; ino?: number }[]>; root?: Record<string, unknown> };
}

const nodeId = (d: TestDaemon) => fs.readFileSync(join(d.root, ".mcfs/node-id"), "utf8").trim();

describe.skipIf(!!skip)("mcfs fsck", () => {
  const cluster = useCluster("fsck", ["a", "b"]);
  const cli = (...args: string[]) => cluster.redis.cli(...args);
  const fsck = (...args: string[]) => {
    const r = spawnSync([MCFS, "fsck", "-u", cluster.redis.url, ...args], { stdout: "pipe", stderr: "pipe" });
    return { code: r.exitCode, out: r.stdout.toString(), err: r.stderr.toString() };
  };
  /** The inode a name of the root directory names, from Redis. */
  const inoOf = async (name: string) => Number((await cli("HGET", "mcfs:d:1", name)).split(":")[0]);

  test("from Redis alone: each disagreement made on purpose is listed, repaired, and the namespace works after", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    for (const f of ["stale", "ghost", "gone", "lost-bytes", "linked"]) fs.writeFileSync(join(a.mnt, f), `${f} bytes`);
    expect(fsck().code).toBe(0);

    const stale = await inoOf("stale"), ghost = await inoOf("ghost"), gone = await inoOf("gone"), lostBytes = await inoOf("lost-bytes"), linked = await inoOf("linked");
    await cli("HSET", `mcfs:loc:${stale}`, nodeId(b), "12345");
    await cli("HSET", `mcfs:loc:${ghost}`, "ghost-node", await cli("HGET", `mcfs:i:${ghost}`, "v"));
    await cli("DEL", `mcfs:i:${gone}`);
    await cli("DEL", `mcfs:loc:${lostBytes}`);
    await cli("SADD", "mcfs:orphans", String(linked), "999999");

    const listed = fsck();
    expect(listed.code).toBe(1);
    expect(listed.out).toContain("stale holders (listed at a version that is not the record's): 1");
    expect(listed.out).toMatch(new RegExp(`/stale .*on ${nodeId(b)}`));
    expect(listed.out).toMatch(/\/ghost .*on ghost-node/);
    expect(listed.out).toMatch(/dangling names .*: 1\n {2}\/gone /);
    expect(listed.out).toMatch(/records without bytes anywhere .*: 1\n {2}\/lost-bytes /);
    expect(listed.out).toContain(`inode ${linked}: it has names`);
    expect(listed.out).toContain("inode 999999: no record");
    expect(listed.out).toContain("6 disagreements");

    const repaired = fsck("--repair", "--json");
    // What was lost stays listed (with its path): nothing can bring its bytes back.
    expect(repaired.code).toBe(1);
    const j = JSON.parse(repaired.out) as FsckJson;
    expect(j.found.cluster!.staleHolders).toHaveLength(1);
    const left = j.left!.cluster;
    expect(left.withoutBytes!.map((x) => x.path)).toEqual(["/lost-bytes"]);
    for (const k of ["staleHolders", "unknownHolders", "danglingNames", "lostInodes", "badOrphans"]) expect({ k, n: left[k]!.length }).toEqual({ k, n: 0 });
    expect(await cli("HKEYS", `mcfs:loc:${stale}`)).toBe(nodeId(a));
    expect(await cli("SISMEMBER", "mcfs:orphans", String(linked))).toBe("0");

    // The namespace works: the dangling name is gone from both mounts, the others read from either node.
    await waitFor("the dangling name to leave b's listing", () => !fs.readdirSync(b.mnt).includes("gone"));
    expect(fs.readdirSync(a.mnt)).not.toContain("gone");
    expect(fs.readFileSync(join(b.mnt, "stale"), "utf8")).toBe("stale bytes");
    expect(fs.readFileSync(join(b.mnt, "ghost"), "utf8")).toBe("ghost bytes");
    expect(fs.readFileSync(join(b.mnt, "linked"), "utf8")).toBe("linked bytes");
    fs.writeFileSync(join(b.mnt, "gone"), "a new file under the freed name");
    expect(fs.readFileSync(join(a.mnt, "gone"), "utf8")).toBe("a new file under the freed name");
    // The operator deletes what was lost: nothing is left to report.
    fs.unlinkSync(join(a.mnt, "lost-bytes"));
    const clean = fsck();
    expect(clean.out).toContain("no disagreements");
    expect(clean.code).toBe(0);
  }, 120_000);

  test("--root on a stopped node: bytes without records, a write cut short, a held file gone; repaired and readable after", async () => {
    let [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.writeFileSync(join(b.mnt, "cut"), "0123456789".repeat(100));
    fs.writeFileSync(join(b.mnt, "vanished"), "only on b");
    fs.mkdirSync(join(b.mnt, "dir"));
    fs.writeFileSync(join(b.mnt, "dir/kept"), "kept on b");
    // A running daemon owns its root path: refused, nothing checked.
    const busy = fsck("--root", b.root);
    expect(busy.code).toBe(2);
    expect(busy.err).toContain("another mcfs daemon");

    expect(await b.stop()).toBe(0);
    fs.writeFileSync(join(b.root, "planted"), "put here while b was down");
    fs.mkdirSync(join(b.root, "newdir"));
    fs.writeFileSync(join(b.root, "newdir/inner"), "inner bytes");
    fs.truncateSync(join(b.root, "cut"), 300);
    fs.rmSync(join(b.root, "vanished"));
    // A symlink in the root path is never followed, not even to a file outside it.
    fs.symlinkSync("/etc/passwd", join(b.root, "dir/link-out"));

    const listed = fsck("--root", b.root);
    expect(listed.code).toBe(1);
    expect(listed.out).toMatch(/bytes without records .*: 2\n {2}\/(planted|newdir\/inner)\n {2}\/(planted|newdir\/inner)\n/);
    expect(listed.out).toMatch(/size differs .*: 1\n {2}\/cut {2}\(inode \d+: record 1000 B, here 300 B\)/);
    expect(listed.out).toMatch(new RegExp(`listed as held by ${nodeId(b)}, but not here: 1\\n {2}/vanished `));

    const repaired = fsck("--root", b.root, "--repair", "--json");
    const j = JSON.parse(repaired.out) as FsckJson;
    // b had the only copy of the vanished file: now a record without bytes, listed.
    expect(j.left!.cluster.withoutBytes!.map((x) => x.path)).toEqual(["/vanished"]);
    expect(j.left!.root).toEqual({ node: nodeId(b), withoutRecords: [], sizeDiffers: [], missing: [] });
    expect(repaired.code).toBe(1);

    b = cluster.nodes[1] = await cluster.start("b");
    expect(fs.readFileSync(join(a.mnt, "planted"), "utf8")).toBe("put here while b was down");
    expect(fs.readFileSync(join(a.mnt, "newdir/inner"), "utf8")).toBe("inner bytes");
    expect(fs.readFileSync(join(a.mnt, "cut"), "utf8")).toBe("0123456789".repeat(30));
    expect(fs.readFileSync(join(a.mnt, "dir/kept"), "utf8")).toBe("kept on b");
    expect(() => fs.readFileSync(join(a.mnt, "vanished"))).toThrow();
    fs.unlinkSync(join(a.mnt, "vanished"));
    expect(fsck().code).toBe(0);
  }, 120_000);

  test("a record no name reaches is listed; a file held only in a cache is a warning; an unlinked file is kept while a node is live, purged once none is", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.writeFileSync(join(a.mnt, "unnamed"), "x");
    fs.writeFileSync(join(a.mnt, "unlinked"), "y");
    const unnamed = await inoOf("unnamed"), unlinked = await inoOf("unlinked");
    const entry = await cli("HGET", "mcfs:d:1", "unnamed");
    await cli("HDEL", "mcfs:d:1", "unnamed");
    const lost = fsck();
    expect(lost.out).toMatch(new RegExp(`lost inodes .*: 1\n {2}inode ${unnamed} `));
    expect(lost.code).toBe(1);
    await cli("HSET", "mcfs:d:1", "unnamed", entry);

    // As an unlink leaves a file some process still has open.
    await cli("HDEL", "mcfs:d:1", "unlinked");
    await cli("HSET", `mcfs:i:${unlinked}`, "n", "0");
    await cli("SADD", "mcfs:orphans", String(unlinked));
    const kept = fsck("--repair");
    expect(kept.out).toContain("unlinked files kept while a node may have them open: 1");
    expect(kept.code).toBe(0);
    expect(await cli("EXISTS", `mcfs:i:${unlinked}`)).toBe("1");

    // Held only in b's cache (its own directory: b fetches a directory's small files together).
    fs.mkdirSync(join(a.mnt, "cdir"));
    fs.writeFileSync(join(a.mnt, "cdir/cached"), "z");
    expect(fs.readFileSync(join(b.mnt, "cdir/cached"), "utf8")).toBe("z");
    const cached = Number((await cli("HGET", `mcfs:d:${Number((await cli("HGET", "mcfs:d:1", "cdir")).split(":")[0])}`, "cached")).split(":")[0]);
    await waitFor("b's copy listed", async () => (await cli("HEXISTS", `mcfs:cc:${cached}`, nodeId(b))) === "1");
    await cli("DEL", `mcfs:loc:${cached}`);
    const warned = fsck();
    expect(warned.out).toMatch(new RegExp(`warning: held only in caches .*: 1\\n {2}/cdir/cached {2}\\(inode ${cached}, cached on ${nodeId(b)}\\)`));
    expect(warned.code).toBe(0);
    fs.rmSync(join(a.mnt, "cdir"), { recursive: true });

    await a.stop();
    await b.stop();
    const listed = fsck();
    expect(listed.out).toContain(`inode ${unlinked}: unlinked, and no node is live to have it open`);
    expect(listed.code).toBe(1);
    const purged = fsck("--repair");
    expect(purged.out).toContain("1 orphans purged");
    expect(purged.code).toBe(0);
    expect(await cli("EXISTS", `mcfs:i:${unlinked}`)).toBe("0");
    expect(await cli("SISMEMBER", "mcfs:orphans", String(unlinked))).toBe("0");
  }, 120_000);

  test("Redis unreachable: exit 2, the URL named without its password", async () => {
    const url = `redis://admin:s3cret-pw@127.0.0.1:${await freePort()}`;
    const r = spawnSync([MCFS, "fsck", "-u", url], { stdout: "pipe", stderr: "pipe" });
    expect(r.exitCode).toBe(2);
    const err = r.stderr.toString();
    expect(err).toContain("127.0.0.1");
    expect(err).not.toContain("s3cret-pw");
  }, 60_000);
});
