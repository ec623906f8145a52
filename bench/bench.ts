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
  stop(): Promise<void>;
}

async function fuseTarget(name: string, mnt: string, cmd: string[]): Promise<Target> {
  fs.mkdirSync(mnt, { recursive: true });
  const p: Subprocess = spawn(cmd, { stdout: "ignore", stderr: "inherit" });
  await until(`${name} mount`, () => mounted(mnt) || p.exitCode !== null);
  if (p.exitCode !== null) throw new Error(`${name} exited with ${p.exitCode}`);
  return {
    name, dir: mnt,
    async stop() {
      p.kill("SIGTERM");
      await p.exited;
      if (mounted(mnt)) spawnSync(["umount", "-l", mnt]);
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

type Row = Record<string, number>;

function runCases(dir: string): Row {
  const row: Row = {};
  const big = join(dir, "big.bin");
  const block = Buffer.alloc(1 << 20, 0xab);
  row["seq write 1 GiB-class (MB/s)"] = mbps(BIG_MIB << 20, timeIt(() => {
    const fd = fs.openSync(big, "w");
    for (let i = 0; i < BIG_MIB; i++) fs.writeSync(fd, block);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
  }));
  dropCaches();
  const rb = Buffer.alloc(1 << 20);
  const read = () => {
    const fd = fs.openSync(big, "r");
    while (fs.readSync(fd, rb, 0, rb.length, null) > 0);
    fs.closeSync(fd);
  };
  row["seq read, cold (MB/s)"] = mbps(BIG_MIB << 20, timeIt(read));
  row["seq read, cached (MB/s)"] = mbps(BIG_MIB << 20, timeIt(read));
  fs.unlinkSync(big);

  const small = join(dir, "small");
  fs.mkdirSync(small);
  const data = Buffer.alloc(4096, 0x61);
  row["create 4 KiB files (files/s)"] = FILES / timeIt(() => {
    for (let i = 0; i < FILES; i++) {
      const fd = fs.openSync(join(small, `f${i}`), "w");
      fs.writeSync(fd, data);
      fs.closeSync(fd);
    }
  });
  row["stat, cached (files/s)"] = FILES / timeIt(() => {
    for (let i = 0; i < FILES; i++) fs.statSync(join(small, `f${i}`));
  });
  dropCaches();
  row["stat, uncached (files/s)"] = FILES / timeIt(() => {
    for (let i = 0; i < FILES; i++) fs.statSync(join(small, `f${i}`));
  });
  const rbuf = Buffer.alloc(8192);
  row["read 4 KiB files (files/s)"] = FILES / timeIt(() => {
    for (let i = 0; i < FILES; i++) {
      const fd = fs.openSync(join(small, `f${i}`), "r");
      fs.readSync(fd, rbuf, 0, rbuf.length, 0);
      fs.closeSync(fd);
    }
  });
  row["ls -l of the directory (s)"] = timeIt(() => {
    const r = spawnSync(["ls", "-l", small], { stdout: "ignore" });
    if (r.exitCode !== 0) throw new Error("ls failed");
  });
  fs.rmSync(small, { recursive: true, force: true });
  return row;
}

const work = fs.mkdtempSync(join(tmpdir(), "mcfs-bench-"));
const targets: Target[] = [];
try {
  const plainDir = join(work, "plain");
  fs.mkdirSync(plainDir);
  const pt = buildPassthrough(work);
  fs.mkdirSync(join(work, "pt-src"));
  const results: Record<string, Row> = {};
  results.plain = runCases(plainDir);
  const ptT = await fuseTarget("passthrough_ll", join(work, "pt-mnt"), [pt, "-f", "-o", `source=${join(work, "pt-src")}`, join(work, "pt-mnt")]);
  targets.push(ptT);
  results.passthrough = runCases(ptT.dir);
  await ptT.stop();
  const mc = await fuseTarget("mcfs", join(work, "mcfs-mnt"), [MCFS, "daemon", "-f", join(work, "mcfs-mnt"), "-r", join(work, "mcfs-root"), "--cache-dir", join(work, "mcfs-cache")]);
  targets.push(mc);
  results.mcfs = runCases(mc.dir);
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
      return `| ${k.replace("1 GiB-class", `${BIG_MIB} MiB`)} | ${f(p)} | ${f(t)} | ${f(m)} | ${r(m, t)} | ${r(m, p)} |`;
    }),
  ];
  const table = lines.join("\n");
  console.log(table);
  if (OUT) {
    const cmd = `bun bench/bench.ts --big-mib ${BIG_MIB} --files ${FILES} --out ${OUT}`;
    fs.writeFileSync(OUT, `# Benchmark results\n\nProduced by \`${cmd}\` on ${new Date().toISOString().slice(0, 10)} (${spawnSync(["uname", "-srm"]).stdout.toString().trim()}, ${require("node:os").cpus().length} cores).\nRatios: above 1 means mcfs is faster. Files are ${FILES} x 4 KiB in one directory; the big file is ${BIG_MIB} MiB written in 1 MiB blocks and fsynced.\n"cold" and "uncached" drop the kernel caches first where the machine allows it.\n\n${table}\n`);
  }
} finally {
  for (const t of targets) await t.stop().catch(() => {});
  fs.rmSync(work, { recursive: true, force: true });
}
