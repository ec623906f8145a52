import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "bun";
import { errCode, fuseUnavailable, waitFor } from "./helpers/env.ts";
import type { TestDaemon } from "./helpers/daemon.ts";
import { scrape } from "./helpers/metrics.ts";
import { useCluster } from "./helpers/node.ts";

const skip = fuseUnavailable();

/** New files on one node of a cluster, in directories another node changes. */
describe.skipIf(!!skip)("creates across nodes", () => {
  const n = useCluster("cluster-creates", ["a", "b"], { a: ["--metrics-port", "0"] }).nodes;

  test("each file made on one node is whole on the other as soon as it is closed (close-to-open), an empty one too; the FUSE shim made them", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    const shimMade = async () => (await scrape(a))("mcfs_shim_creates_total");
    const before = await shimMade();
    fs.mkdirSync(join(a.mnt, "out"));
    for (let i = 0; i < 40; i++) {
      const data = `output ${i} `.repeat(i * 50 + 1);
      fs.writeFileSync(join(a.mnt, "out", `f${i}`), data);
      expect(fs.readFileSync(join(b.mnt, "out", `f${i}`), "utf8")).toBe(data);
    }
    expect(fs.readdirSync(join(b.mnt, "out")).length).toBe(40);
    fs.closeSync(fs.openSync(join(a.mnt, "out", "empty"), "w"));
    expect(fs.statSync(join(b.mnt, "out", "empty")).size).toBe(0);
    // All but the first (made through JS, which hands the shim the directory).
    expect(await shimMade()).toBe(before + 40);
  });

  test("a writer setting the size of a file through the handle it made it with (Bun's writeFileSync: write, then ftruncate): the shim answers it with the file's owner and mode, and the other node reads that size and those bytes", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "cut"), { mode: 0o777 });
    fs.chmodSync(join(a.mnt, "cut"), 0o777);
    // The first file of a directory is made through JS, which hands the shim the directory.
    fs.writeFileSync(join(a.mnt, "cut", "first"), "first");
    const truncates = async () => (await scrape(a))("mcfs_shim_truncates_total");
    const before = await truncates();
    const data = Buffer.alloc(10_000, 7);
    for (const [name, size] of [["same", 10_000], ["shorter", 3_000], ["longer", 25_000], ["empty", 0]] as const) {
      const fd = fs.openSync(join(a.mnt, "cut", name), fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o640);
      fs.writeSync(fd, data);
      fs.ftruncateSync(fd, size);
      const st = fs.fstatSync(fd);
      fs.closeSync(fd);
      expect({ name, size: st.size, mode: st.mode & 0o7777, uid: st.uid, nlink: st.nlink }).toEqual({ name, size, mode: 0o640, uid: 0, nlink: 1 });
      const want = Buffer.alloc(size);
      data.copy(want, 0, 0, Math.min(size, data.length));
      expect(fs.readFileSync(join(b.mnt, "cut", name)).equals(want)).toBe(true);
    }
    expect(await truncates()).toBe(before + 4);
    // Changed through JS first (a chmod): the truncate after it is JS's, with the new mode.
    const fd = fs.openSync(join(a.mnt, "cut", "chmodded"), fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o644);
    fs.writeSync(fd, data);
    fs.chmodSync(join(a.mnt, "cut", "chmodded"), 0o600);
    fs.ftruncateSync(fd, 100);
    expect([fs.fstatSync(fd).mode & 0o7777, fs.fstatSync(fd).size]).toEqual([0o600, 100]);
    fs.closeSync(fd);
    expect(await truncates()).toBe(before + 4);
    expect(fs.statSync(join(b.mnt, "cut", "chmodded")).mode & 0o7777).toBe(0o600);
    if (!Bun.which("setpriv")) return;
    // Another user's file: its owner in the answer.
    const as = spawnSync(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, "-e",
      `const fs = require("fs"); const fd = fs.openSync(process.argv[1], "w"); fs.writeSync(fd, Buffer.alloc(5000, 1)); fs.ftruncateSync(fd, 4000); const st = fs.fstatSync(fd); console.log(JSON.stringify([st.uid, st.gid, st.size]));`, join(a.mnt, "cut", "nobody")], { stdout: "pipe", stderr: "inherit" });
    expect(JSON.parse(as.stdout.toString())).toEqual([65534, 65534, 4000]);
    expect(fs.statSync(join(b.mnt, "cut", "nobody")).uid).toBe(65534);
  });

  test("a small file's create reaches Redis with its size, as one create; one kept open reaches it alone; a rename, link or unlink right after its create finds it", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "held"));
    const ops = async () => {
      const m = await scrape(a);
      return { create: m("mcfs_redis_operations_total", { op: "create" }), setData: m("mcfs_redis_operations_total", { op: "setData" }) };
    };
    const before = await ops();
    for (let i = 0; i < 20; i++) fs.writeFileSync(join(a.mnt, "held", `s${i}`), `small ${i}`);
    expect(await ops()).toEqual({ create: before.create + 20, setData: before.setData });
    for (let i = 0; i < 20; i++) expect(fs.readFileSync(join(b.mnt, "held", `s${i}`), "utf8")).toBe(`small ${i}`);

    // Kept open: the other node sees the name before the close, the bytes after it.
    const fd = fs.openSync(join(a.mnt, "held", "long"), "w");
    fs.writeSync(fd, "written for long");
    await waitFor("the open file's name on B", () => fs.existsSync(join(b.mnt, "held", "long")));
    fs.closeSync(fd);
    expect(fs.readFileSync(join(b.mnt, "held", "long"), "utf8")).toBe("written for long");

    // Each change of a name whose create may still be held, right after it.
    for (let i = 0; i < 10; i++) {
      const f = fs.openSync(join(a.mnt, "held", `r${i}`), "w");
      fs.renameSync(join(a.mnt, "held", `r${i}`), join(a.mnt, "held", `moved${i}`));
      fs.writeSync(f, `moved ${i}`);
      fs.closeSync(f);
      const g = fs.openSync(join(a.mnt, "held", `l${i}`), "w");
      fs.linkSync(join(a.mnt, "held", `l${i}`), join(a.mnt, "held", `linked${i}`));
      fs.writeSync(g, `linked ${i}`);
      fs.closeSync(g);
      const u = fs.openSync(join(a.mnt, "held", `u${i}`), "w");
      fs.unlinkSync(join(a.mnt, "held", `u${i}`));
      fs.writeSync(u, "gone");
      fs.closeSync(u);
    }
    for (const node of [a, b]) {
      for (let i = 0; i < 10; i++) {
        expect(fs.readFileSync(join(node.mnt, "held", `moved${i}`), "utf8")).toBe(`moved ${i}`);
        expect(fs.readFileSync(join(node.mnt, "held", `linked${i}`), "utf8")).toBe(`linked ${i}`);
        expect(fs.readFileSync(join(node.mnt, "held", `l${i}`), "utf8")).toBe(`linked ${i}`);
      }
      const names = fs.readdirSync(join(node.mnt, "held"));
      expect(names.filter((x) => /^(r|u)\d/.test(x))).toEqual([]);
      expect(names.length).toBe(20 + 1 + 30);
    }
  });

  test("creates told late (gathered into one message) and an unlink right after: once the unlink returns, the other node sees the directory as its maker does", () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "burst"));
    // B holds the directory's record, and its kernel the attributes.
    fs.statSync(join(b.mnt, "burst"));
    for (let round = 0; round < 10; round++) {
      for (let i = 0; i < 5; i++) fs.writeFileSync(join(a.mnt, "burst", `f${round}-${i}`), `${round} ${i}`);
      // Waits for B's acknowledgement of the one message that carries the creates before it too.
      fs.unlinkSync(join(a.mnt, "burst", `f${round}-0`));
      const want = fs.statSync(join(a.mnt, "burst"));
      const got = fs.statSync(join(b.mnt, "burst"));
      expect([got.mtimeMs, got.ctimeMs]).toEqual([want.mtimeMs, want.ctimeMs]);
      expect(fs.readdirSync(join(b.mnt, "burst")).sort()).toEqual(fs.readdirSync(join(a.mnt, "burst")).sort());
    }
  });

  test("each close publishes what the file holds then: writes, cuts and a second writer between them (the shim's look at the file at the close, or the file itself)", () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "seen"));
    const bytes = (n: number, v: number) => Buffer.alloc(n, v);
    const cases: [string, (fd: number, path: string) => void][] = [
      ["grown", (fd) => void fs.writeSync(fd, bytes(10_000, 1))],
      ["cut, then written past the cut", (fd) => {
        fs.writeSync(fd, bytes(10_000, 2));
        fs.ftruncateSync(fd, 1000);
        fs.writeSync(fd, bytes(10, 3), 0, 10, 1000);
      }],
      ["cut to nothing", (fd) => {
        fs.writeSync(fd, bytes(5000, 4));
        fs.ftruncateSync(fd, 0);
      }],
      ["a second writer closes first", (fd, path) => {
        fs.writeSync(fd, bytes(3000, 5));
        const g = fs.openSync(path, "r+");
        fs.writeSync(g, bytes(4000, 6), 0, 4000, 6000);
        fs.closeSync(g);
        fs.writeSync(fd, bytes(100, 7), 0, 100, 12_000);
      }],
      ["closed twice through a duplicate", (fd, path) => {
        fs.writeSync(fd, bytes(2000, 8));
        const dup = fs.openSync(`/proc/self/fd/${fd}`, "r+");
        fs.closeSync(dup);
        fs.writeSync(fd, bytes(3000, 9), 0, 3000, 2000);
        void path;
      }],
    ];
    cases.forEach(([what, act], i) => {
      const path = join(a.mnt, "seen", `f${i}`);
      for (let round = 0; round < 3; round++) {
        const fd = fs.openSync(path, round === 0 ? "w" : "r+");
        act(fd, path);
        fs.closeSync(fd);
        const want = fs.readFileSync(path);
        expect({ what, round, size: fs.statSync(join(b.mnt, "seen", `f${i}`)).size }).toEqual({ what, round, size: want.length });
        expect(fs.readFileSync(join(b.mnt, "seen", `f${i}`)).equals(want)).toBe(true);
      }
    });
  });

  test("an O_EXCL create of a name another node made is refused (EEXIST)", () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "excl"));
    for (let i = 0; i < 10; i++) fs.closeSync(fs.openSync(join(a.mnt, "excl", `x${i}`), "wx"));
    expect(errCode(() => fs.openSync(join(b.mnt, "excl", "x3"), "wx"))).toBe("EEXIST");
    fs.writeFileSync(join(b.mnt, "excl", "taken"), "b");
    expect(errCode(() => fs.openSync(join(a.mnt, "excl", "taken"), "wx"))).toBe("EEXIST");
  });

  test("a directory made setgid on another node: the files made in it here after take its group", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    const dir = join(a.mnt, "grp");
    fs.mkdirSync(dir);
    fs.writeFileSync(join(dir, "first"), "1");
    fs.writeFileSync(join(dir, "second"), "2");
    expect(fs.statSync(join(dir, "second")).gid).toBe(0);
    fs.chownSync(join(b.mnt, "grp"), 0, 4242);
    fs.chmodSync(join(b.mnt, "grp"), 0o2775);
    // Only the change's message tells A (the kernel asks for the directory's attributes again).
    let i = 0;
    await waitFor("a new file in grp with the directory's group", () => {
      const f = join(dir, `n${i++}`);
      fs.writeFileSync(f, "x");
      return fs.statSync(f).gid === 4242;
    });
    for (let k = 0; k < 5; k++) {
      const f = join(dir, `after${k}`);
      fs.writeFileSync(f, "x");
      expect(fs.statSync(f).gid).toBe(4242);
      expect(fs.statSync(join(b.mnt, "grp", `after${k}`)).gid).toBe(4242);
    }
  });

  test("a directory removed on another node: a create there fails, and leaves no file on either node", async () => {
    const [a, b] = n as [TestDaemon, TestDaemon];
    const dir = join(a.mnt, "gone");
    fs.mkdirSync(dir);
    fs.writeFileSync(join(dir, "first"), "1");
    fs.writeFileSync(join(dir, "second"), "2");
    const fd = fs.openSync(dir, "r");
    try {
      fs.rmSync(join(b.mnt, "gone"), { recursive: true });
      // Through A's descriptor of the directory: its name is gone, its inode is what the kernel asks about.
      await waitFor("a create in the removed directory refused", () => errCode(() => fs.writeFileSync(`/proc/self/fd/${fd}/late`, "x")) !== undefined);
      expect(errCode(() => fs.writeFileSync(`/proc/self/fd/${fd}/later`, "x"))).toBe("ENOENT");
    } finally {
      fs.closeSync(fd);
    }
    expect(fs.existsSync(join(b.mnt, "gone"))).toBe(false);
    await waitFor("A's local directory gone", () => !fs.existsSync(join(a.root, "gone")));
  });
});
