/**
 * mcfs beside its references, measured in one run on the same disk:
 *   plain        the backing directory itself (no FUSE)
 *   passthrough  libfuse's passthrough_ll example (C, low-level API), built from the libfuse3-dev examples
 *   mcfs         one node, private redis-server
 * Usage: bun bench/bench.ts [--big-mib 1024] [--files 10000] [--out bench/RESULTS.md]
 * Prints a markdown table; with --out also writes it there. Needs root, /dev/fuse, redis-server, dist/mcfs.
 */
import { spawn, spawnSync, type Subprocess } from "bun";
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { freePort } from "../test/helpers/env.ts";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const BIG_MIB = Number(arg("--big-mib", "1024"));
const FILES = Number(arg("--files", "10000"));
const OUT = process.argv.includes("--out") ? arg("--out", "bench/RESULTS.md") : undefined;
const REPO = resolve(import.meta.dir, "..");
const MCFS = join(REPO, "dist/mcfs");

function mounted(p: string): boolean {
  return fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").some((l) => l.split(" ")[4] === p);
}

async function until(what: string, cond: () => boolean): Promise<void> {
  const end = Date.now() + 30_000;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}

function dropCaches(): void {
  spawnSync(["sync"]);
  try {
    fs.writeFileSync("/proc/sys/vm/drop_caches", "3");
  } catch {
    // not allowed here (container): cold numbers then include whatever stayed cached
  }
}

function buildPassthrough(dir: string): string {
  const src = "/usr/share/doc/libfuse3-dev/examples/passthrough_ll.c";
  const out = join(dir, "passthrough_ll");
  const r = spawnSync(["cc", "-O2", "-o", out, src, ...spawnSync(["pkg-config", "--cflags", "--libs", "fuse3"]).stdout.toString().trim().split(/\s+/)], { stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`building passthrough_ll failed: ${r.stderr}`);
  return out;
}

interface Target {
  name: string;
  dir: string;
  /** Unmount and mount again over the same data: every cache of the filesystem starts cold. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

function plainTarget(dir: string): Target {
  return { name: "plain", dir, restart: async () => dropCaches(), stop: async () => {} };
}

async function fuseTarget(name: string, mnt: string, cmd: string[]): Promise<Target> {
  fs.mkdirSync(mnt, { recursive: true });
  let p: Subprocess;
  const start = async () => {
    p = spawn(cmd, { stdout: "ignore", stderr: "ignore" });
    await until(`${name} mount`, () => mounted(mnt) || p.exitCode !== null);
    if (p.exitCode !== null) throw new Error(`${name} exited with ${p.exitCode}`);
  };
  const stop = async () => {
    p.kill("SIGTERM");
    await p.exited;
    if (mounted(mnt)) spawnSync(["umount", "-l", mnt]);
  };
  await start();
  return {
    name, dir: mnt, stop,
    async restart() {
      await stop();
      dropCaches();
      await start();
    },
  };
}

function mbps(bytes: number, s: number) {
  return bytes / 1048576 / s;
}

function timeIt(fn: () => void): number {
  const t = performance.now();
  fn();
  return (performance.now() - t) / 1000;
}

async function timeAsync(fn: () => Promise<unknown>): Promise<number> {
  const t = performance.now();
  await fn();
  return (performance.now() - t) / 1000;
}

type Row = Record<string, number>;

const WRITERS = 4;
const WRITER_SRC = `const fs = require("fs"); const [d, from, to] = process.argv.slice(-3); const b = Buffer.alloc(4096, 98);
for (let i = +from; i < +to; i++) { const fd = fs.openSync(d + "/p" + i, "w"); fs.writeSync(fd, b); fs.closeSync(fd); }`;

async function runCases(t: Target): Promise<Row> {
  const dir = t.dir;
  const row: Row = {};
  const big = join(dir, "big.bin");
  const block = Buffer.alloc(1 << 20, 0xab);
  // Best of three: the disk under all three targets is shared with the rest of the machine.
  let best = 0;
  for (let round = 0; round < 3; round++) {
    const fd = fs.openSync(big, "w");
    best = Math.max(best, mbps(BIG_MIB << 20, timeIt(() => {
      for (let i = 0; i < BIG_MIB; i++) fs.writeSync(fd, block);
    })));
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }
  row["seq write, best of 3 (MB/s)"] = best;
  const rb = Buffer.alloc(1 << 20);
  const read = () => {
    const rfd = fs.openSync(big, "r");
    while (fs.readSync(rfd, rb, 0, rb.length, null) > 0);
    fs.closeSync(rfd);
  };
  await t.restart();
  row["seq read, after remount (MB/s)"] = mbps(BIG_MIB << 20, timeIt(read));
  row["seq read again, best of 3 (MB/s)"] = Math.max(...[0, 1, 2].map(() => mbps(BIG_MIB << 20, timeIt(read))));
  fs.unlinkSync(big);

  const small = join(dir, "small");
  fs.mkdirSync(small);
  const data = Buffer.alloc(4096, 0x61);
  row["create 4 KiB files, 1 writer (files/s)"] = FILES / timeIt(() => {
    for (let i = 0; i < FILES; i++) {
      const f = fs.openSync(join(small, `f${i}`), "w");
      fs.writeSync(f, data);
      fs.closeSync(f);
    }
  });
  // Half as many again, so passthrough_ll's fd per inode stays under the hard limit of open files.
  const PAR = Math.floor(FILES / 2);
  const per = Math.ceil(PAR / WRITERS);
  row[`create 4 KiB files, ${WRITERS} writers (files/s)`] = PAR / (await timeAsync(() =>
    Promise.all(Array.from({ length: WRITERS }, async (_, w) => {
      const code = await spawn([process.execPath, "-e", WRITER_SRC, small, String(w * per), String(Math.min(PAR, (w + 1) * per))], { stderr: "inherit" }).exited;
      if (code !== 0) throw new Error(`${t.name}: writer ${w} failed`);
    }))));
  if (fs.readdirSync(small).length !== FILES + PAR) throw new Error("parallel writers did not create every file");
  row["stat right after writing (files/s)"] = FILES / timeIt(() => {
    for (let i = 0; i < FILES; i++) fs.statSync(join(small, `f${i}`));
  });
  row["stat again, cached (files/s)"] = FILES / timeIt(() => {
    for (let i = 0; i < FILES; i++) fs.statSync(join(small, `f${i}`));
  });
  await t.restart();
  row["stat after remount (files/s)"] = FILES / timeIt(() => {
    for (let i = 0; i < FILES; i++) fs.statSync(join(small, `f${i}`));
  });
  const rbuf = Buffer.alloc(8192);
  row["read 4 KiB files (files/s)"] = FILES / timeIt(() => {
    for (let i = 0; i < FILES; i++) {
      const f = fs.openSync(join(small, `f${i}`), "r");
      fs.readSync(f, rbuf, 0, rbuf.length, 0);
      fs.closeSync(f);
    }
  });
  await t.restart();
  row[`ls -l of ${FILES + PAR} files after remount (s)`] = timeIt(() => {
    const r = spawnSync(["ls", "-l", small], { stdout: "ignore" });
    if (r.exitCode !== 0) throw new Error("ls failed");
  });
  fs.rmSync(small, { recursive: true, force: true });
  return row;
}

const WF_INPUTS = 300;
const WF_TASKS = 600;
/** One workflow worker: tasks from..to by step, each reading 4 inputs (8-64 KiB) and writing one 16 KiB output. */
const WF_WORKER = `const fs = require("fs"); const [inDir, outDir, from, to, step, n] = process.argv.slice(-6);
for (let t = +from; t < +to; t += +step) { for (let k = 0; k < 4; k++) fs.readFileSync(inDir + "/i" + ((t * 7 + k * 13) % +n));
  fs.writeFileSync(outDir + "/o" + t, Buffer.alloc(16384, t & 255)); }`;

/** Inputs written through dirs[i % dirs.length] (each node writes its share), then WF_TASKS tasks spread over the dirs at once: tasks/s. */
async function workflow(dirs: string[]): Promise<number> {
  fs.mkdirSync(join(dirs[0]!, "wf", "in"), { recursive: true });
  fs.mkdirSync(join(dirs[0]!, "wf", "out"));
  for (let i = 0; i < WF_INPUTS; i++) fs.writeFileSync(join(dirs[i % dirs.length]!, "wf", "in", `i${i}`), Buffer.alloc(8192 + ((i * 7919) % 57344), i & 255));
  spawnSync(["sync"]);
  const s = await timeAsync(() => Promise.all(dirs.map(async (d, w) => {
    const code = await spawn([process.execPath, "-e", WF_WORKER, join(d, "wf", "in"), join(d, "wf", "out"), String(w), String(WF_TASKS), String(dirs.length), String(WF_INPUTS)], { stderr: "inherit" }).exited;
    if (code !== 0) throw new Error(`workflow worker ${w} failed`);
  })));
  if (fs.readdirSync(join(dirs[0]!, "wf", "out")).length !== WF_TASKS) throw new Error("workflow outputs missing");
  return WF_TASKS / s;
}

/** Two nodes on this machine, one redis-server: bytes written on A, read on A and on B. */
async function clusterCases(work: string, targets: Target[]): Promise<string> {
  const sock = join(work, "redis.sock");
  const redis = spawn(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no"], { stdout: "ignore", stderr: "ignore" });
  try {
    await until("redis socket", () => fs.existsSync(sock));
    const secret = join(work, "secret");
    fs.writeFileSync(secret, "bench-cluster-secret-0123456789");
    const node = async (name: string, port: number) => {
      const t = await fuseTarget(`mcfs ${name}`, join(work, `${name}-mnt`), [MCFS, "daemon", "-f", join(work, `${name}-mnt`), "-r", join(work, `${name}-root`), "--cache-dir", join(work, `${name}-cache`),
        "-u", `unix://${sock}`, "-i", "127.0.0.1", "-p", String(port), "--cluster-secret-file", secret]);
      targets.push(t);
      return t;
    };
    const a = await node("a", await freePort());
    const b = await node("b", await freePort());
    const rows: [string, number, number][] = [];
    const big = "big.bin";
    const block = Buffer.alloc(1 << 20, 0xcd);
    const fd = fs.openSync(join(a.dir, big), "w");
    for (let i = 0; i < BIG_MIB; i++) fs.writeSync(fd, block);
    fs.closeSync(fd);
    const rb = Buffer.alloc(1 << 20);
    const readAll = (dir: string) => () => {
      const r = fs.openSync(join(dir, big), "r");
      while (fs.readSync(r, rb, 0, rb.length, null) > 0);
      fs.closeSync(r);
    };
    const onA = mbps(BIG_MIB << 20, timeIt(readAll(a.dir)));
    const firstB = mbps(BIG_MIB << 20, timeIt(readAll(b.dir)));
    rows.push([`read ${BIG_MIB} MiB, first time (MB/s)`, onA, firstB]);
    rows.push([`read ${BIG_MIB} MiB again (MB/s)`, mbps(BIG_MIB << 20, timeIt(readAll(a.dir))), mbps(BIG_MIB << 20, timeIt(readAll(b.dir)))]);
    fs.mkdirSync(join(a.dir, "small"));
    const data = Buffer.alloc(4096, 0x62);
    for (let i = 0; i < FILES; i++) fs.writeFileSync(join(a.dir, "small", `f${i}`), data);
    // The big file's copies are still being written back to disk: let that finish, so the small-file
    // case measures itself, not the write-back of the case before.
    spawnSync(["sync"]);
    const rbuf = Buffer.alloc(8192);
    const readSmall = (dir: string) => () => {
      for (let i = 0; i < FILES; i++) {
        const r = fs.openSync(join(dir, "small", `f${i}`), "r");
        fs.readSync(r, rbuf, 0, rbuf.length, 0);
        fs.closeSync(r);
      }
    };
    rows.push([`read ${FILES} 4 KiB files, first time (files/s)`, FILES / timeIt(readSmall(a.dir)), FILES / timeIt(readSmall(b.dir))]);
    rows.push([`read ${FILES} 4 KiB files again (files/s)`, FILES / timeIt(readSmall(a.dir)), FILES / timeIt(readSmall(b.dir))]);
    // Creates with another node up: every name goes to Redis (no sole-node write-behind).
    fs.mkdirSync(join(a.dir, "creates"));
    const cdata = Buffer.alloc(4096, 0x63);
    const c1 = FILES / timeIt(() => {
      for (let i = 0; i < FILES; i++) {
        const f = fs.openSync(join(a.dir, "creates", `c${i}`), "w");
        fs.writeSync(f, cdata);
        fs.closeSync(f);
      }
    });
    const PAR = Math.floor(FILES / 2);
    const per = Math.ceil(PAR / WRITERS);
    const c4 = PAR / (await timeAsync(() => Promise.all(Array.from({ length: WRITERS }, async (_, w) => {
      const code = await spawn([process.execPath, "-e", WRITER_SRC, join(a.dir, "creates"), String(w * per), String(Math.min(PAR, (w + 1) * per))], { stderr: "inherit" }).exited;
      if (code !== 0) throw new Error(`cluster writer ${w} failed`);
    }))));
    const c = await node("c", await freePort());
    const local = join(work, "wf-local");
    fs.mkdirSync(local);
    const wfLocal = await workflow([local, local, local]);
    const wfMcfs = await workflow([a.dir, b.dir, c.dir]);
    await a.stop();
    await b.stop();
    await c.stop();
    const f = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(2));
    return [
      `| case (written on node A) | read on A | read on B | B / A |`,
      `|---|---:|---:|---:|`,
      ...rows.map(([k, x, y]) => `| ${k} | ${f(x)} | ${f(y)} | ${(y / x).toFixed(2)} |`),
      ``,
      `| case | local dir | mcfs | mcfs / local |`,
      `|---|---:|---:|---:|`,
      `| workflow: ${WF_TASKS} tasks on 3 nodes, each reading 4 of ${WF_INPUTS} inputs (8-64 KiB) the nodes wrote, writing one output (tasks/s) | ${f(wfLocal)} | ${f(wfMcfs)} | ${(wfMcfs / wfLocal).toFixed(2)} |`,
      ``,
      `| case (cluster mode: node B up) | mcfs on A |`,
      `|---|---:|`,
      `| create 4 KiB files, 1 writer (files/s) | ${f(c1)} |`,
      `| create 4 KiB files, ${WRITERS} writers (files/s) | ${f(c4)} |`,
    ].join("\n");
  } finally {
    redis.kill();
    await redis.exited;
  }
}

const work = fs.mkdtempSync(join(tmpdir(), "mcfs-bench-"));
const targets: Target[] = [];
try {
  const plainDir = join(work, "plain");
  fs.mkdirSync(plainDir);
  const pt = buildPassthrough(work);
  fs.mkdirSync(join(work, "pt-src"));
  const results: Record<string, Row> = {};
  results.plain = await runCases(plainTarget(plainDir));
  // passthrough_ll keeps an fd per inode it has seen: give it room for 2 x FILES of them.
  const ptT = await fuseTarget("passthrough_ll", join(work, "pt-mnt"), ["sh", "-c", `ulimit -n "$(ulimit -Hn)" && exec "$0" "$@"`, pt, "-f", "-o", `source=${join(work, "pt-src")}`, join(work, "pt-mnt")]);
  targets.push(ptT);
  results.passthrough = await runCases(ptT);
  await ptT.stop();
  const mc = await fuseTarget("mcfs", join(work, "mcfs-mnt"), [MCFS, "daemon", "-f", join(work, "mcfs-mnt"), "-r", join(work, "mcfs-root"), "--cache-dir", join(work, "mcfs-cache")]);
  targets.push(mc);
  results.mcfs = await runCases(mc);
  await mc.stop();

  const keys = Object.keys(results.plain!);
  const f = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(2));
  const lines = [
    `| case | plain dir | passthrough_ll | mcfs | mcfs / passthrough_ll | mcfs / plain |`,
    `|---|---:|---:|---:|---:|---:|`,
    ...keys.map((k) => {
      const [p, t, m] = [results.plain![k]!, results.passthrough![k]!, results.mcfs![k]!];
      // For times, lower is better: show the ratio so that > 1 always means mcfs is faster.
      const inv = k.endsWith("(s)");
      const r = (a: number, b: number) => (inv ? b / a : a / b).toFixed(2);
      return `| ${k} | ${f(p)} | ${f(t)} | ${f(m)} | ${r(m, t)} | ${r(m, p)} |`;
    }),
  ];
  const table = lines.join("\n");
  console.log(table);
  const clusterTable = await clusterCases(work, targets);
  console.log(clusterTable);
  if (OUT) {
    const cmd = `bun bench/bench.ts --big-mib ${BIG_MIB} --files ${FILES} --out ${OUT}`;
    fs.writeFileSync(OUT, `# Benchmark results\n\nProduced by \`${cmd}\` on ${new Date().toISOString().slice(0, 10)} (${spawnSync(["uname", "-srm"]).stdout.toString().trim()}, ${require("node:os").cpus().length} cores).\nRatios: above 1 means mcfs is faster. Small files: ${FILES} x 4 KiB in one directory, then half as many again by ${WRITERS} processes at once. Big file: ${BIG_MIB} MiB written in 1 MiB blocks (timed before its fsync; best of three runs). "After remount": the FUSE filesystem is stopped and mounted again over the same data, so its own caches and the kernel's start empty; the plain directory has no such restart (this machine refuses drop_caches), so its numbers there are warm.\n\n${table}\n\n## Across nodes\n\nTwo daemons on this machine (loopback), one redis-server, a cluster secret: the bytes are written on A, then read on A itself and on B (which fetches them from A over gRPC into its cache directory). The small files are written after a \`sync\`, so the big file's write-back is over. Then a workflow: a third node joins, each node writes a third of the inputs, and one process per node runs its share of the tasks at once (the same three processes on one local directory for the reference). Then creates on A while B is up (cluster mode: names go to Redis as they are made). GlusterFS is not in this table: Debian's glusterfs-server was not installed in this run.\n\n${clusterTable}\n`);
  }
} finally {
  for (const t of targets) await t.stop().catch(() => {});
  fs.rmSync(work, { recursive: true, force: true });
}
