import { beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "bun";
import { errCode, fuseUnavailable } from "./helpers/env.ts";
import type { TestDaemon } from "./helpers/daemon.ts";
import { useCluster } from "./helpers/node.ts";
import { startDaemon } from "./helpers/daemon.ts";

const skip = fuseUnavailable();

/** Run a shell command as user nobody; its exit code and stderr. */
function asNobody(cmd: string): { code: number; err: string } {
  const r = spawnSync(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", cmd], { stderr: "pipe", stdout: "pipe" });
  return { code: r.exitCode ?? -1, err: r.stderr.toString() };
}

/** A local user of two nodes against the daemons' root privileges: nothing outside the root changes. */
describe.skipIf(!!skip)("confinement of local operations", () => {
  const cluster = useCluster("confine", ["a", "b"]);
  let a: TestDaemon, b: TestDaemon, outside: string;

  beforeAll(() => {
    [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    outside = join(cluster.base, "outside");
    fs.mkdirSync(join(outside, "secretdir"), { recursive: true, mode: 0o700 });
    fs.writeFileSync(join(outside, "secretdir", "existing"), "root's own\n", { mode: 0o600 });
    fs.mkdirSync(join(a.mnt, "u"), { mode: 0o777 });
    fs.chmodSync(join(a.mnt, "u"), 0o777);
  });

  const outsideUnchanged = () => {
    expect(fs.readdirSync(join(outside, "secretdir"))).toEqual(["existing"]);
    expect(fs.readFileSync(join(outside, "secretdir", "existing"), "utf8")).toBe("root's own\n");
    expect(fs.statSync(join(outside, "secretdir", "existing")).mode & 0o7777).toBe(0o600);
  };

  test("a symlink left in A's root by a name removed on B is never followed (nobody, two nodes)", () => {
    expect(asNobody(`ln -s ${outside}/secretdir ${a.mnt}/u/s`).code).toBe(0);
    // A keeps the symlink in its root path: it made it.
    expect(fs.lstatSync(join(a.root, "u", "s")).isSymbolicLink()).toBe(true);
    expect(asNobody(`rm ${b.mnt}/u/s && mkdir ${b.mnt}/u/s`).code).toBe(0);
    const w = asNobody(`echo X > ${a.mnt}/u/s/existing && echo Y > ${a.mnt}/u/s/new`);
    expect(w.err).toBe("");
    expect(w.code).toBe(0);
    outsideUnchanged();
    // The new files are where the namespace says, on both nodes; the stale symlink was replaced.
    expect(fs.lstatSync(join(a.root, "u", "s")).isDirectory()).toBe(true);
    expect(fs.readFileSync(join(a.root, "u", "s", "existing"), "utf8")).toBe("X\n");
    expect(fs.readFileSync(join(b.mnt, "u", "s", "existing"), "utf8")).toBe("X\n");
    expect(fs.readFileSync(join(b.mnt, "u", "s", "new"), "utf8")).toBe("Y\n");
  });

  test("a symlink planted in a root path is never followed by truncate, chmod, chown, utimes, rename, unlink, link", () => {
    fs.mkdirSync(join(a.mnt, "u", "t"));
    fs.writeFileSync(join(a.mnt, "u", "t", "existing"), "mine");
    // Swap the directory in A's root for a symlink out (what a stale leftover or a race would leave).
    fs.rmSync(join(a.root, "u", "t"), { recursive: true });
    fs.symlinkSync(join(outside, "secretdir"), join(a.root, "u", "t"));
    const f = join(a.mnt, "u", "t", "existing");
    for (const op of [
      () => fs.truncateSync(f, 3),
      () => fs.chmodSync(f, 0o777),
      () => fs.chownSync(f, 65534, 65534),
      () => fs.utimesSync(f, 1e9, 1e9),
      () => fs.renameSync(f, join(a.mnt, "u", "moved")),
      () => fs.linkSync(join(a.mnt, "u", "moved"), join(a.mnt, "u", "t", "linked")),
      () => fs.unlinkSync(join(a.mnt, "u", "t", "linked")),
      () => fs.writeFileSync(join(a.mnt, "u", "t", "fresh"), "fresh"),
    ]) {
      try {
        op();
      } catch {
        // Refusing is fine; changing something outside is not.
      }
      outsideUnchanged();
    }
  });

  test("a path longer than PATH_MAX below the mount works, on the writer and across nodes", () => {
    const part = "p".repeat(203);
    // Relative steps: the path below the mount, and so the one in the root path, exceed PATH_MAX.
    const depth = 22;
    const script = `cd ${a.mnt}/u && for i in $(seq ${depth}); do mkdir ${part} && cd ${part} || exit 1; done && echo deep > f && cat f`;
    const r = spawnSync(["bash", "-c", script], { stdout: "pipe", stderr: "pipe" });
    expect(r.stderr.toString()).toBe("");
    expect(r.stdout.toString()).toBe("deep\n");
    expect(`${a.root}/u/${Array(depth).fill(part).join("/")}/f`.length).toBeGreaterThan(4096);
    const read = spawnSync(["bash", "-c", `cd ${b.mnt}/u && for i in $(seq ${depth}); do cd ${part} || exit 1; done && cat f`], { stdout: "pipe", stderr: "pipe" });
    expect(read.stderr.toString()).toBe("");
    expect(read.stdout.toString()).toBe("deep\n");
    const rm = spawnSync(["rm", "-rf", join(a.mnt, "u", part)], { stderr: "pipe" });
    expect(rm.exitCode).toBe(0);
    expect(fs.existsSync(join(a.root, "u", part))).toBe(false);
  });

  test("a cache dir another user owns or can write is refused at start, naming it", async () => {
    const mine = join(cluster.base, "user-cache");
    fs.mkdirSync(mine);
    fs.chownSync(mine, 65534, 65534);
    const open = join(cluster.base, "open-cache");
    fs.mkdirSync(open);
    fs.chmodSync(open, 0o777);
    const link = join(cluster.base, "link-cache");
    fs.mkdirSync(join(cluster.base, "real-cache"), { mode: 0o700 });
    fs.symlinkSync(join(cluster.base, "real-cache"), link);
    fs.lchownSync(link, 65534, 65534);
    for (const dir of [mine, open, link]) {
      await expect(startDaemon({ base: cluster.base, name: `c-${dir.split("/").pop()}`, redisUrl: cluster.redis.url, args: ["--cache-dir", dir] })).rejects.toThrow(`cache dir ${dir}`);
    }
  });

  test("the root path is closed to other users: they reach the bytes only through the mount", () => {
    for (const n of cluster.nodes) expect(fs.statSync(n.root).mode & 0o077).toBe(0);
    expect(asNobody(`ls ${a.root}`).code).not.toBe(0);
    expect(asNobody(`ls ${a.mnt}`).code).toBe(0);
  });

  test("names that are not UTF-8 are refused (EILSEQ), never made into another name", () => {
    const bad = (tail: number[]) => Buffer.concat([Buffer.from(join(a.mnt, "u") + "/x"), Buffer.from(tail)]);
    for (const tail of [[0xff], [0xfe], [0xc3]]) {
      expect(errCode(() => fs.writeFileSync(bad(tail), "x"))).toBe("EILSEQ");
      expect(errCode(() => fs.mkdirSync(bad(tail)))).toBe("EILSEQ");
      expect(errCode(() => fs.statSync(bad(tail)))).toBe("ENOENT");
    }
    // The replacement character is a name of its own.
    fs.writeFileSync(join(a.mnt, "u", "x\ufffd"), "real");
    expect(errCode(() => fs.statSync(bad([0xff])))).toBe("ENOENT");
    expect(fs.readFileSync(join(a.mnt, "u", "x\ufffd"), "utf8")).toBe("real");
  });
});
