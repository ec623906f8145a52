/**
 * mcfs beside its references, measured in one run on the same disk:
 *   plain        the backing directory itself (no FUSE)
 *   passthrough  libfuse's passthrough_ll example (C, low-level API), built from the libfuse3-dev examples
 *   mcfs         one node, private redis-server
 * and across nodes (two, then three daemons on this machine) beside
 *   GlusterFS    Debian's glusterfs-server (installed with apt-get if missing), a private glusterd, a 2-brick
 *                distribute volume and three FUSE clients; "n/a", with the reason, when it cannot run
 * Usage: bun bench/bench.ts [--big-mib 1024] [--files 10000] [--out bench/RESULTS.md]
 * Prints markdown tables; with --out also writes them there. Needs root, /dev/fuse, redis-server, dist/mcfs.
 */
import { spawn, spawnSync, type Subprocess } from "bun";
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { freePort } from "../test/helpers/env.ts";
import { brickFiles, glusterUnavailable, glusterVersion, startGluster, type Gluster } from "./gluster.ts";
import { alive, buildPassthrough, cmdline, mounted, startRedis, startTime, until, unmountUnder, holdWarm, warmMemory } from "./sys.ts";
import { WF_INPUTS, WF_TASKS, WF_WORKER, WRITER_SRC, wfInput } from "./tasks.ts";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const BIG_MIB = Number(arg("--big-mib", "1024"));
const FILES = Number(arg("--files", "10000"));
const OUT = process.argv.includes("--out") ? arg("--out", "bench/RESULTS.md") : undefined;
const REPO = resolve(import.meta.dir, "..");
const MCFS = join(REPO, "dist/mcfs");

function dropCaches(): void {
  spawnSync(["sync"]);
  try {
    fs.writeFileSync("/proc/sys/vm/drop_caches", "3");
  } catch {
    // not allowed here (container): cold numbers then include whatever stayed cached
  }
}

/** Anything the bench started that must be stopped however it ends. */
interface Stoppable {
  stop(): Promise<void>;
}

interface Target extends Stoppable {
  name: string;
  dir: string;
  /** Unmount and mount again over the same data: every cache of the filesystem starts cold. */
  restart(): Promise<void>;
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

async function runCases(t: Target): Promise<Row> {
  const dir = t.dir;
  const row: Row = {};
  const big = join(dir, "big.bin");
  const block = Buffer.alloc(1 << 20, 0xab);
  warmMemory(4 * BIG_MIB);
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
  // Kept to the end of the bench: on this machine's ext4 (no journal) a create near inodes deleted a
  // second to a minute before costs several times more, which would tax whichever target ran next.
  return row;
}

/** Processes per node in the workflow: one, then several at once, as a node running tasks in parallel would. */
const WF_PER_NODE = [1, 4];

/**
 * Inputs written through nodes[i % nodes.length] (each node writes its share), then WF_TASKS tasks run by
 * perNode processes on every node at once: tasks/s. Each perNode has its own directory, so runs do not meet.
 */
async function workflow(nodes: string[], perNode: number, dir = `wf${perNode}`): Promise<number> {
  const wf = (d: string, sub: string) => join(d, dir, sub);
  fs.mkdirSync(wf(nodes[0]!, "in"), { recursive: true });
  fs.mkdirSync(wf(nodes[0]!, "out"));
  for (let i = 0; i < WF_INPUTS; i++) fs.writeFileSync(join(wf(nodes[i % nodes.length]!, "in"), `i${i}`), wfInput(i));
  spawnSync(["sync"]);
  const workers = nodes.length * perNode;
  const s = await timeAsync(() => Promise.all(Array.from({ length: workers }, async (_, w) => {
    const d = nodes[w % nodes.length]!;
    const code = await spawn([process.execPath, "-e", WF_WORKER, wf(d, "in"), wf(d, "out"), String(w), String(WF_TASKS), String(workers), String(WF_INPUTS)], { stderr: "inherit" }).exited;
    if (code !== 0) throw new Error(`workflow worker ${w} failed`);
  })));
  if (fs.readdirSync(wf(nodes[0]!, "out")).length !== WF_TASKS) throw new Error("workflow outputs missing");
  return WF_TASKS / s;
}

/** [case, through node A, through node B] */
type Reads = [string, number, number][];

/** Bytes written through a, then read through a and through b, the first time and again. */
function readsAcross(a: string, b: string): Reads {
  const rows: Reads = [];
  const big = "big.bin";
  const block = Buffer.alloc(1 << 20, 0xcd);
  const fd = fs.openSync(join(a, big), "w");
  for (let i = 0; i < BIG_MIB; i++) fs.writeSync(fd, block);
  fs.closeSync(fd);
  const rb = Buffer.alloc(1 << 20);
  const readAll = (dir: string) => () => {
    const r = fs.openSync(join(dir, big), "r");
    while (fs.readSync(r, rb, 0, rb.length, null) > 0);
    fs.closeSync(r);
  };
  // A first read across nodes fills page cache on both sides (GlusterFS: the client's; mcfs: also the copy's).
  const warmA = holdWarm(BIG_MIB);
  const warmB = holdWarm(2 * BIG_MIB);
  let onA: number, firstB: number;
  try {
    warmA();
    onA = mbps(BIG_MIB << 20, timeIt(readAll(a)));
    warmB();
    firstB = mbps(BIG_MIB << 20, timeIt(readAll(b)));
  } finally {
    // A read that failed leaves no memory held.
    warmA();
    warmB();
  }
  rows.push([`read ${BIG_MIB} MiB, first time (MB/s)`, onA, firstB]);
  rows.push([`read ${BIG_MIB} MiB again (MB/s)`, mbps(BIG_MIB << 20, timeIt(readAll(a))), mbps(BIG_MIB << 20, timeIt(readAll(b)))]);
  fs.mkdirSync(join(a, "small"));
  const data = Buffer.alloc(4096, 0x62);
  for (let i = 0; i < FILES; i++) fs.writeFileSync(join(a, "small", `f${i}`), data);
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
  rows.push([`read ${FILES} 4 KiB files, first time (files/s)`, FILES / timeIt(readSmall(a)), FILES / timeIt(readSmall(b))]);
  rows.push([`read ${FILES} 4 KiB files again (files/s)`, FILES / timeIt(readSmall(a)), FILES / timeIt(readSmall(b))]);
  return rows;
}

/** Creates through dir while another node is up: files/s with 1 writer, then with WRITERS processes. */
async function createsAcross(dir: string): Promise<[number, number]> {
  fs.mkdirSync(join(dir, "creates"));
  const cdata = Buffer.alloc(4096, 0x63);
  const c1 = FILES / timeIt(() => {
    for (let i = 0; i < FILES; i++) {
      const f = fs.openSync(join(dir, "creates", `c${i}`), "w");
      fs.writeSync(f, cdata);
      fs.closeSync(f);
    }
  });
  const PAR = Math.floor(FILES / 2);
  const per = Math.ceil(PAR / WRITERS);
  const c4 = PAR / (await timeAsync(() => Promise.all(Array.from({ length: WRITERS }, async (_, w) => {
    const code = await spawn([process.execPath, "-e", WRITER_SRC, join(dir, "creates"), String(w * per), String(Math.min(PAR, (w + 1) * per))], { stderr: "inherit" }).exited;
    if (code !== 0) throw new Error(`cluster writer ${w} failed`);
  }))));
  return [c1, c4];
}

/** The cross-node cases of one filesystem: reads across A and B, creates on A with B up; its three nodes' mounts, up for the workflows. */
interface Across {
  reads: Reads;
  creates: [number, number];
  nodes: string[];
  stop(): Promise<void>;
}

/**
 * Runs of each workflow case on each target, alternated: this host's speed moves by a third within
 * minutes, so runs of two targets minutes apart compare the host's phases more than the targets.
 */
const WF_RUNS = 5;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/**
 * The workflows of every target (its three nodes' directories), WF_RUNS runs each, one target after
 * another in each round (the order turned round every other round): per target, per WF_PER_NODE, the
 * tasks/s of each round in order; undefined for a target whose run failed (failed: why). One untimed
 * run first, in a directory of its own: what is measured is a filesystem that has been serving a
 * while (mcfs's JIT has compiled its hot paths: the first seconds of a daemon run its JavaScript
 * slower), as a workflow's tasks meet it after the first few. Every target gets it.
 */
async function workflowsAlternated(targets: string[][], failed: (t: number, e: Error) => void): Promise<(number[][] | undefined)[]> {
  const runs = targets.map(() => WF_PER_NODE.map(() => [] as number[]));
  const down = new Set<number>();
  const attempt = async (t: number, run: () => Promise<number | void>) => {
    if (down.has(t)) return;
    try {
      await run();
    } catch (e) {
      down.add(t);
      failed(t, e as Error);
    }
  };
  for (const [t, nodes] of targets.entries()) await attempt(t, () => workflow(nodes, 1, "wf-warm"));
  for (const [p, n] of WF_PER_NODE.entries()) {
    for (let r = 0; r < WF_RUNS; r++) {
      const order = [...targets.keys()];
      if (r % 2) order.reverse();
      for (const t of order) await attempt(t, async () => void runs[t]![p]!.push(await workflow(targets[t]!, n, `wf${n}-${r}`)));
    }
  }
  return runs.map((byCase, t) => (down.has(t) ? undefined : byCase));
}

/** mcfs: two nodes on this machine and one redis-server; a third node joins for the workflows. */
async function mcfsAcross(work: string, running: Stoppable[]): Promise<Across> {
  const { redis, sock } = await startRedis(work);
  running.push({ stop: async () => { redis.kill(); await redis.exited; } });
  const secret = join(work, "secret");
  fs.writeFileSync(secret, "bench-cluster-secret-0123456789");
  const node = async (name: string, port: number) => {
    const t = await fuseTarget(`mcfs ${name}`, join(work, `${name}-mnt`), [MCFS, "daemon", "-f", join(work, `${name}-mnt`), "-r", join(work, `${name}-root`), "--cache-dir", join(work, `${name}-cache`),
      "-u", `unix://${sock}`, "-i", "127.0.0.1", "-p", String(port), "--cluster-secret-file", secret]);
    running.push(t);
    return t;
  };
  const a = await node("a", await freePort());
  const b = await node("b", await freePort());
  const reads = readsAcross(a.dir, b.dir);
  // Creates with another node up: every name goes to Redis (no sole-node write-behind).
  const creates = await createsAcross(a.dir);
  const c = await node("c", await freePort());
  return {
    reads,
    creates,
    nodes: [a.dir, b.dir, c.dir],
    async stop() {
      for (const t of [a, b, c]) await t.stop();
      redis.kill();
      await redis.exited;
    },
  };
}

/** The same cases on GlusterFS: three FUSE clients of one 2-brick distribute volume; or why they could not run. Never throws: the mcfs numbers stand without it. */
async function glusterAcross(work: string, running: Stoppable[]): Promise<Across | string> {
  const why = glusterUnavailable();
  if (why) return why;
  let g: Gluster | undefined;
  try {
    g = await startGluster(join(work, "gluster"), 3);
    running.push(g);
    const [a, b] = g.clients as [string, string, string];
    const reads = readsAcross(a, b);
    const creates = await createsAcross(a);
    const up = g;
    return { reads, creates, nodes: [...g.clients], stop: () => up.stop() };
  } catch (e) {
    await g?.stop();
    return `GlusterFS failed: ${(e as Error).message}`;
  }
}

function acrossTables(m: Across & { workflows: number[][] }, g: (Across & { workflows: number[][] }) | string, localRuns: number[][]): string {
  const f = (n: number) => (n >= 100 ? n.toFixed(0) : n.toFixed(2));
  const gl = typeof g === "string" ? undefined : g;
  const gf = (n: number | undefined) => (n === undefined ? "n/a" : f(n));
  const ratio = (x: number, y: number | undefined) => (y === undefined ? "n/a" : (x / y).toFixed(2));
  // Medians for the table; every run, and each round's ratio (the targets ran within a minute of each other), below it.
  const mWf = m.workflows.map(median), gWf = gl?.workflows.map(median), local = localRuns.map(median);
  const list = (xs: number[]) => xs.map(f).join(", ");
  const spread = WF_PER_NODE.map((n, i) => {
    const perRound = gl ? `; mcfs / GlusterFS in each round ${m.workflows[i]!.map((x, r) => (x / gl.workflows[i]![r]!).toFixed(2)).join(", ")}` : "";
    return `${n} process${n > 1 ? "es" : ""} per node, each run in order (tasks/s): mcfs ${list(m.workflows[i]!)}; local dir ${list(localRuns[i]!)}${gl ? `; GlusterFS ${list(gl.workflows[i]!)}` : ""}${perRound}.`;
  });
  const wfCase = (n: number) => `workflow: ${WF_TASKS} tasks on 3 nodes, ${n} process${n > 1 ? "es" : ""} per node, each task reading 4 of ${WF_INPUTS} inputs (8-64 KiB) the nodes wrote and writing one output (tasks/s, median of ${WF_RUNS} runs alternated between the targets)`;
  return [
    `| case (written on node A) | mcfs on A | mcfs on B | B / A | GlusterFS on A | GlusterFS on B | mcfs / GlusterFS, on B |`,
    `|---|---:|---:|---:|---:|---:|---:|`,
    ...m.reads.map(([k, x, y], i) => `| ${k} | ${f(x)} | ${f(y)} | ${(y / x).toFixed(2)} | ${gf(gl?.reads[i]![1])} | ${gf(gl?.reads[i]![2])} | ${ratio(y, gl?.reads[i]![2])} |`),
    ``,
    `| case | local dir | GlusterFS | mcfs | mcfs / GlusterFS | mcfs / local |`,
    `|---|---:|---:|---:|---:|---:|`,
    ...WF_PER_NODE.map((n, i) => `| ${wfCase(n)} | ${f(local[i]!)} | ${gf(gWf?.[i])} | ${f(mWf[i]!)} | ${ratio(mWf[i]!, gWf?.[i])} | ${(mWf[i]! / local[i]!).toFixed(2)} |`),
    ``,
    ...spread.flatMap((l) => [l, ``]),
    `| case (cluster mode: node B up) | GlusterFS on A | mcfs on A | mcfs / GlusterFS |`,
    `|---|---:|---:|---:|`,
    `| create 4 KiB files, 1 writer (files/s) | ${gf(gl?.creates[0])} | ${f(m.creates[0])} | ${ratio(m.creates[0], gl?.creates[0])} |`,
    `| create 4 KiB files, ${WRITERS} writers (files/s) | ${gf(gl?.creates[1])} | ${f(m.creates[1])} | ${ratio(m.creates[1], gl?.creates[1])} |`,
    ...(typeof g === "string" ? [``, `GlusterFS: n/a (${g}).`] : []),
  ].join("\n");
}

const WORK_PREFIX = "mcfs-bench-";

/**
 * Leave nothing of a bench in dir, without its help: kill (by pid) the processes whose command line or cwd
 * lies in dir (daemons, redis, GlusterFS's glusterd, bricks and clients, workers), unmount what is mounted
 * there, remove the files bricks keep outside it, and dir. Synchronous, so a signal handler can use it.
 */
function reap(dir: string): void {
  const inDir = (p: string) => p === dir || p.startsWith(`${dir}/`);
  const pids = fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).map(Number).filter((pid) => {
    let cwd = "";
    try {
      cwd = fs.readlinkSync(`/proc/${pid}/cwd`);
    } catch {}
    return pid !== process.pid && alive(pid) && (inDir(cwd) || cmdline(pid).some((a) => a.includes(`${dir}/`)));
  });
  const outside = pids.flatMap((p) => brickFiles(cmdline(p)));
  const kill = (p: number, sig: NodeJS.Signals) => {
    try {
      process.kill(p, sig);
    } catch {}
  };
  // SIGTERM first: an mcfs daemon then unmounts itself.
  for (const p of pids) kill(p, "SIGTERM");
  const end = Date.now() + 10_000;
  while (pids.some(alive) && Date.now() < end) Bun.sleepSync(50);
  for (const p of pids.filter(alive)) kill(p, "SIGKILL");
  unmountUnder(dir);
  for (const f of outside) fs.rmSync(f, { force: true });
  fs.rmSync(dir, { recursive: true, force: true });
}

/**
 * A bench killed midway (SIGKILL, a lost terminal) leaves its daemons, GlusterFS bricks and mounts behind,
 * and glusterd holds port 24007. Every work dir names its bench (bench.pid): reap each dir whose bench is
 * gone. Dirs without bench.pid (older benches) are left alone: their owner cannot be told.
 */
function cleanLeftovers(): void {
  for (const name of fs.readdirSync(tmpdir()).filter((n) => n.startsWith(WORK_PREFIX))) {
    const dir = join(tmpdir(), name);
    let owner: string[];
    try {
      owner = fs.readFileSync(join(dir, "bench.pid"), "utf8").trim().split(" ");
    } catch {
      continue;
    }
    if (startTime(Number(owner[0])) === owner[1]) continue;
    console.error(`bench: cleaning up after a killed bench in ${dir}`);
    reap(dir);
  }
}

cleanLeftovers();
const work = fs.mkdtempSync(join(tmpdir(), WORK_PREFIX));
fs.writeFileSync(join(work, "bench.pid"), `${process.pid} ${startTime(process.pid)}`);
const running: Stoppable[] = [];
// Interrupted, still leave nothing mounted or running; synchronously, so the interrupted code starts nothing more.
for (const [sig, n] of [["SIGINT", 2], ["SIGTERM", 15], ["SIGHUP", 1]] as const) {
  process.on(sig, () => {
    console.error(`bench: ${sig}: stopping everything it started`);
    reap(work);
    process.exit(128 + n);
  });
}
try {
  const plainDir = join(work, "plain");
  fs.mkdirSync(plainDir);
  const pt = buildPassthrough(work);
  fs.mkdirSync(join(work, "pt-src"));
  const results: Record<string, Row> = {};
  results.plain = await runCases(plainTarget(plainDir));
  // passthrough_ll keeps an fd per inode it has seen: give it room for 2 x FILES of them.
  const ptT = await fuseTarget("passthrough_ll", join(work, "pt-mnt"), ["sh", "-c", `ulimit -n "$(ulimit -Hn)" && exec "$0" "$@"`, pt, "-f", "-o", `source=${join(work, "pt-src")}`, join(work, "pt-mnt")]);
  running.push(ptT);
  results.passthrough = await runCases(ptT);
  await ptT.stop();
  const mc = await fuseTarget("mcfs", join(work, "mcfs-mnt"), [MCFS, "daemon", "-f", join(work, "mcfs-mnt"), "-r", join(work, "mcfs-root"), "--cache-dir", join(work, "mcfs-cache")]);
  running.push(mc);
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
  const mcfsX = await mcfsAcross(work, running);
  let glusterX = await glusterAcross(work, running);
  if (typeof glusterX === "string") console.error(`bench: GlusterFS: ${glusterX}`);
  // The reference for the workflows: the same processes on one local directory.
  const local = join(work, "wf-local");
  fs.mkdirSync(local);
  const targets = [mcfsX.nodes, [local, local, local], ...(typeof glusterX === "string" ? [] : [glusterX.nodes])];
  let mcfsFailed: Error | undefined;
  const [mcfsWf, localWf, glusterWf] = await workflowsAlternated(targets, (t, e) => {
    if (t === 2) console.error(`bench: GlusterFS's workflow failed: ${e.message}`);
    else mcfsFailed ??= e;
  });
  await mcfsX.stop();
  if (typeof glusterX !== "string") await glusterX.stop();
  if (mcfsFailed || !mcfsWf || !localWf) throw mcfsFailed ?? new Error("a workflow failed");
  if (typeof glusterX !== "string" && !glusterWf) glusterX = "GlusterFS's workflow failed";
  const clusterTable = acrossTables({ ...mcfsX, workflows: mcfsWf }, typeof glusterX === "string" ? glusterX : { ...glusterX, workflows: glusterWf! }, localWf);
  console.log(clusterTable);
  if (OUT) {
    const cmd = `bun bench/bench.ts --big-mib ${BIG_MIB} --files ${FILES} --out ${OUT}`;
    const glusterText = typeof glusterX === "string"
      ? `GlusterFS is n/a in these tables: ${glusterX}.`
      : `GlusterFS ${glusterVersion()} (Debian's glusterfs-server) beside it: the same cases through three FUSE clients (A, B, C; all mounted from the start; its reads and creates after mcfs's, with mcfs's daemons up and idle) of one plain distribute volume with default options: two bricks in the bench's temporary directory (the same disk), served by a private glusterd on this machine.`;
    fs.writeFileSync(OUT, `# Benchmark results\n\nProduced by \`${cmd}\` on ${new Date().toISOString().slice(0, 10)} (${spawnSync(["uname", "-srm"]).stdout.toString().trim()}, ${require("node:os").cpus().length} cores).\nRatios: above 1 means mcfs is faster. Small files: ${FILES} x 4 KiB in one directory, then half as many again by ${WRITERS} processes at once. Big file: ${BIG_MIB} MiB written in 1 MiB blocks (timed before its fsync; best of three runs). "After remount": the FUSE filesystem is stopped and mounted again over the same data, so its own caches and the kernel's start empty; the plain directory has no such restart (this machine refuses drop_caches), so its numbers there are warm. No case deletes its files before the bench ends: on this machine's ext4, which has no journal, creating files next to inodes deleted a second to a minute before runs several times slower (10,000 creates in a plain directory: 55,000 files/s, 6,000 two seconds after deleting 10,000 others), which would tax whichever target ran after a deletion.\n\n${table}\n\n## Across nodes\n\nTwo daemons on this machine (loopback), one redis-server, a cluster secret: the bytes are written on A, then read on A itself and on B (which fetches them from A into its cache directory: whole files over the bulk lane, plain TCP on the peer port; batches of small files over gRPC). The small files are written after a \`sync\`, so the big file's write-back is over. Then creates on A while B is up (cluster mode: names go to Redis as they are made). Then workflows: a third node joins, each node writes a third of the inputs, and one process per node (then ${WF_PER_NODE.at(-1)}) runs its share of the tasks at once (the same processes on one local directory for the reference). Each target first runs the one-process workflow once untimed, on inputs and outputs of its own: the runs measured are of a filesystem that has served a while (a daemon's first seconds run its JavaScript before the JIT has compiled it: 15-20% fewer tasks/s on this machine). Each workflow case then runs ${WF_RUNS} times on each target in turn, mcfs, the local directory and GlusterFS (the order turned round every other round; the daemons of both filesystems up throughout), and the median of each target's runs is shown, each run and each round's ratio below the table: this host's speed moves by a third within minutes, which decided the ratio when the targets ran minutes apart. ${glusterText}\n\n${clusterTable}\n`);
  }
} finally {
  // Latest first: clients before their servers.
  for (const t of running.reverse()) await t.stop().catch((e) => console.error(`bench: stopping: ${(e as Error).message}`));
  unmountUnder(work);
  fs.rmSync(work, { recursive: true, force: true });
}
