import { beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { fuseUnavailable, errCode } from "./helpers/env.ts";
import { readDirFd, renameat2 } from "./helpers/libc.ts";

const RENAME_EXCHANGE = 2;
import type { TestDaemon } from "./helpers/daemon.ts";
import { useCluster } from "./helpers/node.ts";

const skip = fuseUnavailable();

/** Two daemons, one Redis: one namespace. Kernel caches on the other node follow every change. */
describe.skipIf(!!skip)("one namespace across two nodes", () => {
  const cluster = useCluster("ns", ["a", "b"]);
  let a: TestDaemon, b: TestDaemon;
  beforeAll(() => {
    [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
  });

  test("RENAME_EXCHANGE on B of two files A holds: each name now leads to the other file's own bytes, on every node and on A's disk", () => {
    fs.mkdirSync(join(a.mnt, "ex"));
    fs.writeFileSync(join(a.mnt, "ex/p"), "p's bytes, the longer ones");
    fs.writeFileSync(join(a.mnt, "ex/q"), "q's bytes");
    fs.chmodSync(join(a.mnt, "ex/p"), 0o600);
    expect(renameat2(join(b.mnt, "ex/p"), join(b.mnt, "ex/q"), RENAME_EXCHANGE)).toBe(0);
    for (const n of [a, b]) {
      expect(fs.readFileSync(join(n.mnt, "ex/p"), "utf8")).toBe("q's bytes");
      expect(fs.readFileSync(join(n.mnt, "ex/q"), "utf8")).toBe("p's bytes, the longer ones");
      expect(fs.statSync(join(n.mnt, "ex/q")).mode & 0o777).toBe(0o600);
    }
    expect(fs.readFileSync(join(a.root, "ex/p"), "utf8")).toBe("q's bytes");
    expect(fs.readFileSync(join(a.root, "ex/q"), "utf8")).toBe("p's bytes, the longer ones");
  });

  // B's kernel holds p for the file A swaps away: an open by it that walked before the swap's
  // invalidation raced the swap and opens that file. Refused, the kernel looks p up once more, and a
  // second swap within that round trip made the retry fail too: ESTALE reached the reader.
  test("a process on B reading two names A keeps swapping (RENAME_EXCHANGE) reads whole files, never an error", async () => {
    fs.mkdirSync(join(a.mnt, "swap"));
    const [p, q] = ["P".repeat(100), "Q".repeat(200)];
    fs.writeFileSync(join(a.mnt, "swap/p"), p);
    fs.writeFileSync(join(a.mnt, "swap/q"), q);
    const stop = join(cluster.base, "swap-stop");
    const reader = Bun.spawn(
      [
        process.execPath,
        "-e",
        `const fs = require("fs"); const [dir, stop, p, q] = process.argv.slice(-4); const seen = { ok: 0, errors: {} };
        for (let i = 0; !fs.existsSync(stop) || i < 2; i++) for (const n of ["p", "q"]) {
          try { const s = fs.readFileSync(dir + "/" + n, "utf8"); if (s === p || s === q) seen.ok++; else seen.errors.mixed = (seen.errors.mixed ?? 0) + 1; }
          catch (e) { seen.errors[e.code] = (seen.errors[e.code] ?? 0) + 1; }
          if (i === 0 && n === "q") console.error("reading");
        }
        console.log(JSON.stringify(seen));`,
        join(b.mnt, "swap"),
        stop,
        p,
        q,
      ],
      { stdout: "pipe", stderr: "pipe" },
    );
    let seen: { ok: number; errors: Record<string, number> };
    try {
      // Swaps only once B reads.
      const err = reader.stderr.getReader();
      expect(new TextDecoder().decode((await err.read()).value)).toContain("reading");
      err.releaseLock();
      for (let i = 0; i < 1500; i++) expect(renameat2(join(a.mnt, "swap/p"), join(a.mnt, "swap/q"), RENAME_EXCHANGE)).toBe(0);
      fs.writeFileSync(stop, "");
      seen = JSON.parse(await new Response(reader.stdout).text());
      expect(await reader.exited).toBe(0);
    } finally {
      if (reader.exitCode === null) reader.kill();
      await reader.exited;
    }
    expect(seen.errors).toEqual({});
    expect(seen.ok).toBeGreaterThan(1000);
    const both = [fs.readFileSync(join(b.mnt, "swap/p"), "utf8"), fs.readFileSync(join(b.mnt, "swap/q"), "utf8")].sort();
    expect(both).toEqual([p, q]);
  });

  test("names and attributes made on one node are seen on the other", () => {
    fs.mkdirSync(join(a.mnt, "d1"));
    fs.writeFileSync(join(a.mnt, "d1/f"), "12345");
    fs.chmodSync(join(a.mnt, "d1/f"), 0o600);
    const st = fs.statSync(join(b.mnt, "d1/f"));
    expect(st.size).toBe(5);
    expect(st.mode & 0o777).toBe(0o600);
    expect(st.ino).toBe(fs.statSync(join(a.mnt, "d1/f")).ino);
    expect(fs.readdirSync(join(b.mnt, "d1"))).toEqual(["f"]);
  });

  test("a name A renames or removes while B has the directory open is not handed to B's kernel under its old name", () => {
    fs.mkdirSync(join(a.mnt, "dopen"));
    fs.writeFileSync(join(a.mnt, "dopen/a"), "original a");
    fs.writeFileSync(join(a.mnt, "dopen/gone"), "gone");
    fs.writeFileSync(join(a.mnt, "dopen/stays"), "stays");
    expect(fs.readdirSync(join(b.mnt, "dopen")).sort()).toEqual(["a", "gone", "stays"]);
    const dir = fs.openSync(join(b.mnt, "dopen"), fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    // Returned on A once B has heard (see the test below).
    fs.renameSync(join(a.mnt, "dopen/a"), join(a.mnt, "dopen/b"));
    fs.unlinkSync(join(a.mnt, "dopen/gone"));
    const listed = readDirFd(dir);
    fs.closeSync(dir);
    expect(listed).toContain("stays");
    expect(fs.existsSync(join(b.mnt, "dopen/a"))).toBe(false);
    fs.writeFileSync(join(b.mnt, "dopen/a"), "new a");
    fs.writeFileSync(join(b.mnt, "dopen/gone"), "new gone");
    for (const n of [a, b]) {
      expect(fs.readFileSync(join(n.mnt, "dopen/b"), "utf8")).toBe("original a");
      expect(fs.readFileSync(join(n.mnt, "dopen/a"), "utf8")).toBe("new a");
      expect(fs.readFileSync(join(n.mnt, "dopen/gone"), "utf8")).toBe("new gone");
    }
  });

  // A reply naming f that B's kernel takes in just after its invalidation (a listing in flight) leaves
  // it the name: the open of B's create then finds the renamed file, and must not empty it.
  test("B's create of a name A just renamed away, while B lists the directory, makes a new file and never empties the renamed one", async () => {
    fs.mkdirSync(join(a.mnt, "churn"));
    const n = 200;
    for (let i = 0; i < n; i++) fs.writeFileSync(join(a.mnt, `churn/f${i}`), `orig ${i}`);
    const lister = Bun.spawn([process.execPath, "-e", `const fs = require("fs"); for (;;) fs.readdirSync(process.argv.at(-1));`, join(b.mnt, "churn")], { stdout: "ignore", stderr: "ignore" });
    try {
      for (let i = 0; i < n; i++) {
        fs.renameSync(join(a.mnt, `churn/f${i}`), join(a.mnt, `churn/g${i}`));
        fs.writeFileSync(join(b.mnt, `churn/f${i}`), `new ${i}`);
      }
    } finally {
      lister.kill();
      await lister.exited;
    }
    const clobbered = Array.from({ length: n }, (_, i) => i).filter((i) => fs.readFileSync(join(a.mnt, `churn/g${i}`), "utf8") !== `orig ${i}`);
    expect(clobbered).toEqual([]);
    for (let i = 0; i < n; i++) expect(fs.readFileSync(join(a.mnt, `churn/f${i}`), "utf8")).toBe(`new ${i}`);
  });

  test("a name B has cached goes away on B when A unlinks or renames it", async () => {
    fs.mkdirSync(join(a.mnt, "d2"));
    fs.writeFileSync(join(a.mnt, "d2/gone"), "x");
    fs.writeFileSync(join(a.mnt, "d2/moved"), "y");
    expect(fs.existsSync(join(b.mnt, "d2/gone"))).toBe(true);
    expect(fs.existsSync(join(b.mnt, "d2/moved"))).toBe(true);
    // Seen on B as soon as they return on A: A waits until B's kernel has dropped the names.
    fs.unlinkSync(join(a.mnt, "d2/gone"));
    expect(fs.existsSync(join(b.mnt, "d2/gone"))).toBe(false);
    fs.renameSync(join(a.mnt, "d2/moved"), join(a.mnt, "d2/new"));
    expect(fs.existsSync(join(b.mnt, "d2/moved"))).toBe(false);
    expect(fs.statSync(join(b.mnt, "d2/new")).size).toBe(1);
    expect(fs.readdirSync(join(b.mnt, "d2")).sort()).toEqual(["new"]);
    // Many times over, names B has just looked at: never a stale answer.
    let stale = 0;
    for (let i = 0; i < 100; i++) {
      fs.writeFileSync(join(a.mnt, `d2/f${i}`), "x");
      fs.statSync(join(b.mnt, `d2/f${i}`));
      fs.renameSync(join(a.mnt, `d2/f${i}`), join(a.mnt, `d2/g${i}`));
      if (fs.existsSync(join(b.mnt, `d2/f${i}`))) stale++;
      fs.statSync(join(b.mnt, `d2/g${i}`));
      fs.unlinkSync(join(a.mnt, `d2/g${i}`));
      if (fs.existsSync(join(b.mnt, `d2/g${i}`))) stale++;
    }
    expect(stale).toBe(0);
  });

  test("both nodes renaming in one directory at once: every rename lands, each name once", async () => {
    fs.mkdirSync(join(a.mnt, "d6"));
    const N = 60;
    for (let i = 0; i < N; i++) {
      fs.writeFileSync(join(a.mnt, `d6/a${i}`), `a${i}`);
      fs.writeFileSync(join(b.mnt, `d6/b${i}`), `b${i}`);
    }
    const renames = (mnt: string, p: string) =>
      `const fs = require("fs"); for (let i = 0; i < ${N}; i++) fs.renameSync(${JSON.stringify(mnt)} + "/d6/${p}" + i, ${JSON.stringify(mnt)} + "/d6/${p}-done" + i);`;
    const procs = [Bun.spawn([process.execPath, "-e", renames(a.mnt, "a")]), Bun.spawn([process.execPath, "-e", renames(b.mnt, "b")])];
    expect(await Promise.all(procs.map((p) => p.exited))).toEqual([0, 0]);
    const want = Array.from({ length: N }, (_, i) => [`a-done${i}`, `b-done${i}`]).flat().sort();
    expect(fs.readdirSync(join(a.mnt, "d6")).sort()).toEqual(want);
    expect(fs.readdirSync(join(b.mnt, "d6")).sort()).toEqual(want);
    expect(fs.readFileSync(join(b.mnt, "d6/a-done7"), "utf8")).toBe("a7");
  });

  test("a name that did not exist on B appears there as soon as A's create returns", () => {
    fs.mkdirSync(join(a.mnt, "d3"));
    for (let i = 0; i < 50; i++) {
      expect(fs.existsSync(join(b.mnt, `d3/late${i}`))).toBe(false);
      fs.writeFileSync(join(a.mnt, `d3/late${i}`), "z");
      expect(fs.existsSync(join(b.mnt, `d3/late${i}`))).toBe(true);
    }
  });

  test("rmdir on one node fails with ENOTEMPTY when the other node put a child there", () => {
    fs.mkdirSync(join(a.mnt, "d4"));
    fs.writeFileSync(join(b.mnt, "d4/child"), "c");
    expect(errCode(() => fs.rmdirSync(join(a.mnt, "d4")))).toBe("ENOTEMPTY");
  });

  test("renaming a directory moves its whole subtree for both nodes", () => {
    fs.mkdirSync(join(a.mnt, "tree/x/y"), { recursive: true });
    fs.writeFileSync(join(a.mnt, "tree/x/y/leaf"), "leaf");
    expect(fs.existsSync(join(b.mnt, "tree/x/y/leaf"))).toBe(true);
    fs.renameSync(join(b.mnt, "tree"), join(b.mnt, "tree2"));
    expect(fs.statSync(join(a.mnt, "tree2/x/y/leaf")).size).toBe(4);
    expect(fs.existsSync(join(a.mnt, "tree"))).toBe(false);
  });

  test("concurrent creates of one name on both nodes: exactly one wins", async () => {
    fs.mkdirSync(join(a.mnt, "race"));
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) => {
        const m = i % 2 ? a.mnt : b.mnt;
        return Bun.spawn(["sh", "-c", `set -C; echo ${i} > ${m}/race/one`], { stderr: "ignore" }).exited;
      }),
    );
    expect(results.filter((r) => r === 0).length).toBe(1);
    expect(fs.readdirSync(join(a.mnt, "race"))).toEqual(["one"]);
  });
});
