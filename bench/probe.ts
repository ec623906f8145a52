/**
 * Where the time of one bench case goes, binaries alternated: the case outside the bench, with the CPU
 * each process spent by thread group (JS: the daemon's JavaScript thread; shim: the FUSE session's
 * threads; mcfs-files/send/receive: the file pool's). The bench's rows move ±30% between runs of one
 * binary on this host: alternate binaries here before believing a difference.
 *
 * Usage: bun bench/probe.ts bigread|heads|workflow|creates|onecreates|stats BIN[,BIN...] [rounds]
 *   bigread   1 GiB written on A, read the first time on B (MB/s)
 *   workflow  the bench's workflow on three nodes, one process a node (PER=4: four), after a warm-up run (REPEAT=n: n runs, each in its own directories)
 *   creates   4 KiB creates on A with B up, one writer then four
 *   heads     on B, the first 8 KiB of each of FILES (default 50) files of MIB (default 2; or KIB) A wrote, one after
 *             another (a table tool reading headers); then as many others read whole (ms a file)
 *   onecreates  4 KiB creates on a sole node (its own redis-server), FILES by one writer then half as many by four; BIN "passthrough"
 *             runs libfuse's passthrough_ll over the same disk instead; BIG_FIRST=MIB writes, syncs and deletes a file
 *             of that size first, as the bench's cases before them do
 *   stats     a sole node (its own redis-server): 15,000 files made by one writer, remount, stat 10,000
 *             of them (ms at marks)
 * PROF=dir runs node A (PROF_NODE: another) from source under Bun's --cpu-prof (read the profile with bench/cpuprof.ts).
 * PERF=file (workflow, creates, onecreates' one writer): \`perf record -a -g\` over the timed part (of the last run), into file.
 * LOGS=dir: the cluster's daemons write their logs (stderr) to dir/<node>.log.
 * METRICS=1 (workflow, creates; heads: B's): what node A's counters (mcfs_*_total, and histograms' _sum and _count) gained over the timed part
 *   (creates: and Redis's calls and microseconds by command).
 * MIB, TASKS, FILES change the sizes; PROBE_DIR: where the nodes keep their files (default /tmp; a tmpfs
 * spares creates the slowness of this ext4 next to many deleted inodes). Needs root, /dev/fuse, redis-server.
 */
import { spawn, spawnSync, type Subprocess } from "bun";
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { freePort } from "../test/helpers/env.ts";
import { buildPassthrough, mounted, startRedis, until } from "./sys.ts";
import { WF_INPUTS, WF_TASKS, WF_WORKER, WRITER_SRC, wfInput } from "./tasks.ts";

const [kind, bins, roundsArg] = process.argv.slice(2);
const ROUNDS = Number(roundsArg ?? 1);
const REPO = resolve(import.meta.dir, "..");

type Ticks = Map<string, number>;

/** CPU ticks of pid's threads so far, by group. */
function ticks(pid: number): Ticks {
  const m: Ticks = new Map();
  for (const tid of fs.readdirSync(`/proc/${pid}/task`)) {
    let raw: string;
    try {
      raw = fs.readFileSync(`/proc/${pid}/task/${tid}/stat`, "utf8");
    } catch {
      continue;
    }
    const comm = raw.slice(raw.indexOf("(") + 1, raw.lastIndexOf(")"));
    const group = tid === String(pid) ? "JS" : /^mcfs-(files|send|receive)$|JIT|Heap/.test(comm) ? comm : "shim";
    const f = raw.slice(raw.lastIndexOf(")") + 2).split(" ");
    m.set(group, (m.get(group) ?? 0) + Number(f[11]) + Number(f[12]));
  }
  return m;
}

/** The processes pid started (a sole node's own redis-server). */
const childPids = (pid: number) =>
  fs.readdirSync(`/proc/${pid}/task`).flatMap((tid) => fs.readFileSync(`/proc/${pid}/task/${tid}/children`, "utf8").split(" ").filter(Boolean).map(Number));

const spent = (before: Ticks, pid: number) =>
  [...ticks(pid)].map(([k, v]) => [k, v - (before.get(k) ?? 0)] as const).filter(([, v]) => v > 1).map(([k, v]) => `${k}=${v}`).join(" ");

interface Node {
  name: string;
  mnt: string;
  pid: number;
  metrics: number;
}

/** A node's counters (mcfs_*_total, by labels), read from its metrics port. */
async function counters(n: Node): Promise<Map<string, number>> {
  const m = new Map<string, number>();
  if (!process.env.METRICS) return m;
  const text = await (await fetch(`http://127.0.0.1:${n.metrics}/metrics`)).text();
  for (const line of text.split("\n")) {
    const hit = /^(mcfs_\w+_(?:total|sum|count)(?:\{[^}]*\})?) (\S+)$/.exec(line);
    if (hit) m.set(hit[1]!, Number(hit[2]));
  }
  return m;
}

/** Redis's calls and microseconds by command (INFO commandstats), with METRICS. */
function redisStats(sock: string): Map<string, number> {
  const m = new Map<string, number>();
  if (!process.env.METRICS) return m;
  const out = spawnSync(["redis-cli", "-s", sock, "info", "commandstats"]).stdout.toString();
  for (const hit of out.matchAll(/^cmdstat_(\S+):calls=(\d+),usec=(\d+)/gm)) {
    m.set(`redis_calls{cmd="${hit[1]}"}`, Number(hit[2]));
    m.set(`redis_usec{cmd="${hit[1]}"}`, Number(hit[3]));
  }
  return m;
}

/** What counters gained since before, one per line, the largest first. */
const gained = (before: Map<string, number>, after: Map<string, number>) =>
  [...after].map(([k, v]) => [k, v - (before.get(k) ?? 0)] as const).filter(([, v]) => v > 0).sort((x, y) => y[1] - x[1]).map(([k, v]) => `\n  ${v} ${k}`).join("");

/** How to start a daemon: bin, or with PROF set and profiled, the source under Bun's profiler. */
const daemonCmd = (bin: string, profiled: boolean) =>
  process.env.PROF && profiled ? [process.execPath, "--cpu-prof", "--cpu-prof-dir", process.env.PROF, join(REPO, "src/cli/main.ts")] : [bin];

/** One redis-server and the named daemons of bin, in a temporary directory; stop() ends them all. */
async function cluster(bin: string, names: string[]) {
  const work = fs.mkdtempSync(join(process.env.PROBE_DIR ?? "/tmp", "mcfs-probe-"));
  const procs: Subprocess[] = [];
  const nodes: Node[] = [];
  const { redis, sock } = await startRedis(work).catch((e: unknown) => {
    fs.rmSync(work, { recursive: true, force: true });
    throw e;
  });
  const stop = async () => {
    for (const p of procs.reverse()) {
      p.kill("SIGTERM");
      await p.exited;
    }
    for (const n of nodes) if (mounted(n.mnt)) spawnSync(["umount", "-l", n.mnt]);
    redis.kill();
    await redis.exited;
    fs.rmSync(work, { recursive: true, force: true });
  };
  try {
    fs.writeFileSync(join(work, "secret"), "probe-cluster-secret-0123456789");
    for (const name of names) {
      const mnt = join(work, `${name}-mnt`);
      fs.mkdirSync(mnt);
      const metrics = await freePort();
      const p = spawn([...daemonCmd(bin, name === (process.env.PROF_NODE ?? "a")), "daemon", "-f", mnt, "-r", join(work, `${name}-root`), "--cache-dir", join(work, `${name}-cache`), "-u", `unix://${sock}`, "-i", "127.0.0.1", "-p", String(await freePort()), "--cluster-secret-file", join(work, "secret"), ...(process.env.METRICS ? ["--metrics-port", String(metrics)] : [])], { stdout: "ignore", stderr: process.env.LOGS ? Bun.file(join(process.env.LOGS, `${name}.log`)) : "ignore" });
      procs.push(p);
      nodes.push({ name, mnt, pid: p.pid, metrics });
      await until(`${name}'s mount`, () => mounted(mnt) || p.exitCode !== null);
      if (p.exitCode !== null) throw new Error(`${name} exited with ${p.exitCode}`);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { nodes, redisPid: redis.pid, sock, stop };
}

/** perf recording the whole machine from now until the stop it returns is called, when PERF names its output. */
async function perfStart(): Promise<() => Promise<void>> {
  if (!process.env.PERF) return async () => {};
  const what = process.env.PERF_EVENTS ? ["-e", process.env.PERF_EVENTS] : ["-g", "-F", "1999"];
  const p = spawn(["perf", "record", "-a", ...what, "-o", process.env.PERF], { stdout: "ignore", stderr: "ignore" });
  await Bun.sleep(300);
  return async () => {
    p.kill("SIGINT");
    await p.exited;
  };
}

const run = (args: string[]) => spawn([process.execPath, "-e", ...args], { stderr: "inherit" }).exited;

async function bigread(bin: string): Promise<string> {
  const mib = Number(process.env.MIB ?? 1024);
  const c = await cluster(bin, ["a", "b"]);
  try {
    const [a, b] = c.nodes as [Node, Node];
    const buf = Buffer.alloc(1 << 20, 0x5a);
    const w = fs.openSync(join(a.mnt, "big"), "w");
    for (let i = 0; i < mib; i++) fs.writeSync(w, buf);
    fs.closeSync(w);
    spawnSync(["sync"]);
    const ta = ticks(a.pid), tb = ticks(b.pid);
    const t0 = performance.now();
    const r = fs.openSync(join(b.mnt, "big"), "r");
    let n = 0;
    for (let k; (k = fs.readSync(r, buf, 0, buf.length, null)) > 0; ) n += k;
    fs.closeSync(r);
    const s = (performance.now() - t0) / 1000;
    if (n !== mib << 20) throw new Error(`read ${n} bytes of ${mib << 20}`);
    return `${(mib / s).toFixed(0)} MB/s; A ${spent(ta, a.pid)}; B ${spent(tb, b.pid)}`;
  } finally {
    await c.stop();
  }
}

async function workflow(bin: string): Promise<string> {
  const per = Number(process.env.PER ?? 1), tasks = Number(process.env.TASKS ?? WF_TASKS);
  const c = await cluster(bin, ["a", "b", "c"]);
  try {
    const once = async (dir: string) => {
      const at = (n: Node, sub: string) => join(n.mnt, dir, sub);
      fs.mkdirSync(at(c.nodes[0]!, "in"), { recursive: true });
      fs.mkdirSync(at(c.nodes[0]!, "out"));
      for (let i = 0; i < WF_INPUTS; i++) fs.writeFileSync(join(at(c.nodes[i % 3]!, "in"), `i${i}`), wfInput(i));
      spawnSync(["sync"]);
      const before = c.nodes.map((n) => ticks(n.pid)), rb = ticks(c.redisPid), m0 = await counters(c.nodes[0]!);
      const workers = 3 * per;
      const perfStop = await perfStart();
      const t0 = performance.now();
      const codes = await Promise.all(Array.from({ length: workers }, (_, w) => run([WF_WORKER, at(c.nodes[w % 3]!, "in"), at(c.nodes[w % 3]!, "out"), String(w), String(tasks), String(workers), String(WF_INPUTS)])));
      const s = (performance.now() - t0) / 1000;
      await perfStop();
      if (codes.some((x) => x !== 0)) throw new Error("a workflow worker failed");
      return `${(tasks / s).toFixed(0)} tasks/s; ${c.nodes.map((n, i) => `${n.name} ${spent(before[i]!, n.pid)}`).join("; ")}; redis ${spent(rb, c.redisPid)}${gained(m0, await counters(c.nodes[0]!))}`;
    };
    await once("warm");
    const runs: string[] = [];
    for (let i = 0; i < Number(process.env.REPEAT ?? 1); i++) runs.push(await once(`wf${i}`));
    return runs.join("\n  ");
  } finally {
    await c.stop();
  }
}

async function heads(bin: string): Promise<string> {
  const files = Number(process.env.FILES ?? 50), bytes = process.env.KIB ? Number(process.env.KIB) << 10 : Number(process.env.MIB ?? 2) << 20;
  const c = await cluster(bin, ["a", "b"]);
  try {
    const [a, b] = c.nodes as [Node, Node];
    const buf = Buffer.alloc(bytes, 0x5a);
    for (const dir of ["head", "whole"]) {
      fs.mkdirSync(join(a.mnt, dir));
      for (let i = 0; i < files; i++) fs.writeFileSync(join(a.mnt, dir, `f${i}`), buf);
    }
    spawnSync(["sync"]);
    const timed = async (dir: string, want: number) => {
      const tb = ticks(b.pid), m0 = await counters(b);
      const t0 = performance.now();
      for (let i = 0; i < files; i++) {
        const fd = fs.openSync(join(b.mnt, dir, `f${i}`), "r");
        let n = 0;
        for (let k; n < want && (k = fs.readSync(fd, buf, 0, Math.min(buf.length, want - n), n)) > 0; ) n += k;
        fs.closeSync(fd);
        if (n !== want) throw new Error(`read ${n} bytes of ${want}`);
      }
      return `${((performance.now() - t0) / files).toFixed(2)} ms a file (B ${spent(tb, b.pid)})${gained(m0, await counters(b))}`;
    };
    return `heads ${await timed("head", Math.min(8192, bytes))}; whole ${await timed("whole", bytes)}`;
  } finally {
    await c.stop();
  }
}

async function creates(bin: string): Promise<string> {
  const files = Number(process.env.FILES ?? 6000);
  const c = await cluster(bin, ["a", "b"]);
  try {
    const [a, b] = c.nodes as [Node, Node];
    const go = async (dir: string, writers: number) => {
      fs.mkdirSync(join(a.mnt, dir));
      const ta = ticks(a.pid), tb = ticks(b.pid), tr = ticks(c.redisPid), m0 = await counters(a), r0 = redisStats(c.sock);
      const per = Math.ceil(files / writers);
      const perfStop = await perfStart();
      const t0 = performance.now();
      const codes = await Promise.all(Array.from({ length: writers }, (_, w) => run([WRITER_SRC, join(a.mnt, dir), String(w * per), String(Math.min(files, (w + 1) * per))])));
      const s = (performance.now() - t0) / 1000;
      await perfStop();
      if (codes.some((x) => x !== 0)) throw new Error("a writer failed");
      return `${writers} writer(s) ${(files / s).toFixed(0)} files/s (A ${spent(ta, a.pid)}; B ${spent(tb, b.pid)}; redis ${spent(tr, c.redisPid)})${gained(m0, await counters(a))}${gained(r0, redisStats(c.sock))}`;
    };
    await go("warm", 1);
    return `${await go("one", 1)}; ${await go("four", 4)}`;
  } finally {
    await c.stop();
  }
}

async function onecreates(bin: string): Promise<string> {
  const files = Number(process.env.FILES ?? 10000);
  const work = fs.mkdtempSync(join(process.env.PROBE_DIR ?? "/tmp", "mcfs-probe-"));
  const mnt = join(work, "mnt");
  fs.mkdirSync(mnt);
  fs.mkdirSync(join(work, "src"));
  const cmd = bin === "passthrough"
    ? ["sh", "-c", `ulimit -n "$(ulimit -Hn)" && exec "$0" "$@"`, buildPassthrough(work), "-f", "-o", `source=${join(work, "src")}`, mnt]
    : [...daemonCmd(bin, true), "daemon", "-f", mnt, "-r", join(work, "root"), "--cache-dir", join(work, "cache")];
  const d = spawn(cmd, { stdout: "ignore", stderr: "ignore" });
  try {
    await until("mount", () => mounted(mnt) || d.exitCode !== null);
    if (d.exitCode !== null) throw new Error(`${bin} exited with ${d.exitCode}`);
    const go = async (dir: string, writers: number, files: number) => {
      fs.mkdirSync(join(mnt, dir));
      const before = ticks(d.pid);
      const redis = childPids(d.pid);
      const redisBefore = redis.map(ticks);
      const per = Math.ceil(files / writers);
      const stopPerf = writers === 1 ? await perfStart() : async () => {};
      const t0 = performance.now();
      const codes = await Promise.all(Array.from({ length: writers }, (_, w) => run([WRITER_SRC, join(mnt, dir), String(w * per), String(Math.min(files, (w + 1) * per))])));
      const s = (performance.now() - t0) / 1000;
      await stopPerf();
      if (codes.some((x) => x !== 0)) throw new Error("a writer failed");
      const children = redis.map((pid, i) => `child=${[...ticks(pid).values()].reduce((a, b) => a + b, 0) - [...redisBefore[i]!.values()].reduce((a, b) => a + b, 0)}`).join(" ");
      return `${writers} writer(s) ${(files / s).toFixed(0)} files/s (${spent(before, d.pid)} ${children})`;
    };
    // BIG_FIRST: as in the bench, a big file written, synced and deleted just before.
    if (process.env.BIG_FIRST) {
      const big = join(mnt, "big.bin"), block = Buffer.alloc(1 << 20, 0xab);
      const fd = fs.openSync(big, "w");
      for (let i = 0; i < Number(process.env.BIG_FIRST); i++) fs.writeSync(fd, block);
      fs.fsyncSync(fd);
      fs.closeSync(fd);
      fs.unlinkSync(big);
    }
    // Half as many by four, as in the bench: passthrough_ll keeps an fd per inode it has seen.
    return `${await go("one", 1, files)}; ${await go("four", 4, Math.floor(files / 2))}`;
  } finally {
    d.kill("SIGTERM");
    await d.exited;
    if (mounted(mnt)) spawnSync(["umount", "-l", mnt]);
    fs.rmSync(work, { recursive: true, force: true });
  }
}

async function stats(bin: string): Promise<string> {
  const files = Number(process.env.FILES ?? 15000), stat = Math.min(files, 10000);
  const work = fs.mkdtempSync(join(process.env.PROBE_DIR ?? "/tmp", "mcfs-probe-"));
  const mnt = join(work, "mnt");
  fs.mkdirSync(mnt);
  let p: Subprocess | undefined;
  const start = async (profiled: boolean) => {
    const d = spawn([...daemonCmd(bin, profiled), "daemon", "-f", mnt, "-r", join(work, "root"), "--cache-dir", join(work, "cache")], { stdout: "ignore", stderr: "ignore" });
    p = d;
    await until("mount", () => mounted(mnt) || d.exitCode !== null);
    if (d.exitCode !== null) throw new Error(`daemon exited with ${d.exitCode}`);
    return d;
  };
  const stop = async () => {
    p?.kill("SIGTERM");
    await p?.exited;
    if (mounted(mnt)) spawnSync(["umount", "-l", mnt]);
  };
  try {
    const first = await start(false);
    fs.mkdirSync(join(mnt, "small"));
    // The daemon's own redis-server is its child.
    const redisPid = Number(fs.readFileSync(`/proc/${first.pid}/task/${first.pid}/children`, "utf8").trim().split(" ")[0]);
    const d0 = ticks(first.pid), r0 = ticks(redisPid);
    const c0 = performance.now();
    if ((await run([WRITER_SRC, join(mnt, "small"), "0", String(files)])) !== 0) throw new Error("the writer failed");
    const made = `made ${(files / ((performance.now() - c0) / 1000)).toFixed(0)} files/s (one writer; ${spent(d0, first.pid)}; redis ${spent(r0, redisPid)})`;
    await stop();
    const d = await start(true);
    const before = ticks(d.pid);
    const marks: string[] = [];
    const t0 = performance.now();
    for (let i = 0; i < stat; i++) {
      fs.statSync(join(mnt, "small", `p${i}`));
      if ([0, 1, 9, 99, 999].includes(i) || i % 2000 === 1999) marks.push(`${i + 1}:${(performance.now() - t0).toFixed(0)}`);
    }
    const s = (performance.now() - t0) / 1000;
    return `${made}; ${(stat / s).toFixed(0)} stats/s after remount; ms after n stats ${marks.join(" ")}; ${spent(before, d.pid)}`;
  } finally {
    await stop();
    fs.rmSync(work, { recursive: true, force: true });
  }
}

const cases: Record<string, (bin: string) => Promise<string>> = { bigread, heads, workflow, creates, onecreates, stats };
const probe = cases[kind ?? ""];
if (!probe || !bins) {
  console.error(`usage: bun bench/probe.ts ${Object.keys(cases).join("|")} BIN[,BIN...] [rounds]`);
  process.exit(2);
}
for (let r = 0; r < ROUNDS; r++) for (const bin of bins.split(",")) console.log(`${bin}: ${await probe(bin)}`);
