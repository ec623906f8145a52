/**
 * A real scientific workflow: a Montage mosaic (Debian's montage package), its tasks spread over
 * three nodes the way a workflow system spreads them, beside the same tasks in one local directory
 * (and, when it runs here, GlusterFS with three clients), in one invocation.
 *
 * Inputs: a grid of synthetic sky images (FITS, float32, TAN projection, each a little rotated, with
 * its own background level and slope, and the same stars where they overlap), written into the
 * shared directory through node A before the clock starts. Then, stage by stage (each stage waits
 * for the one before, as in a DAG), the tasks of a stage run at once, PER at a time on each node:
 *   mImgtbl, mMakeHdr                        one task each
 *   mProjectPP                               one per image
 *   mImgtbl, mOverlaps                       one each
 *   mDiff + mFitplane (mDiffFit)             one per overlap
 *   fits table (mConcatFit)                  one
 *   mBgModel                                 one
 *   mBackground                              one per image
 *   mImgtbl, mAdd, mShrink, mViewer          one each
 * Task i of a stage runs on node i % 3; a stage of one task runs on the node after the last one's.
 * Each target runs the whole workflow once untimed first, in another directory (a daemon's
 * JavaScript is compiled as it runs).
 * The mosaic each target makes is compared byte for byte with the local one.
 *
 * Usage: bun bench/montage.ts [--grid 5] [--pixels 512] [--per 1] [--out FILE]
 * Needs root, /dev/fuse, redis-server, dist/mcfs, montage (installed with apt-get if missing).
 */
import { spawn, spawnSync } from "bun";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import { join, resolve } from "node:path";
import { tmpdir } from "node:os";
import { freePort } from "../test/helpers/env.ts";
import { glusterUnavailable, glusterVersion, startGluster, type Gluster } from "./gluster.ts";
import { mounted, until } from "./sys.ts";

const arg = (name: string, dflt: string) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1]! : dflt;
};
const GRID = Number(arg("--grid", "5"));
const PIXELS = Number(arg("--pixels", "512"));
const PER = Number(arg("--per", "1"));
const OUT = process.argv.includes("--out") ? arg("--out", "") : undefined;
const MCFS = join(resolve(import.meta.dir, ".."), "dist/mcfs");

interface Task {
  cmd: string;
}
interface Stage {
  name: string;
  tasks: (ctx: { images: string[]; overlaps: number }) => Task[];
}

// ---- inputs -------------------------------------------------------------------------------------

/** A FITS header: 80-character cards, END, padded with blanks to 2880 bytes. */
function fitsHeader(cards: [string, string | number | boolean][]): Buffer {
  const value = (v: string | number | boolean) =>
    typeof v === "boolean" ? (v ? "T" : "F").padStart(20) : typeof v === "string" ? `'${v.padEnd(8)}'`.padEnd(20) : (Number.isInteger(v) ? String(v) : v.toExponential(12).toUpperCase()).padStart(20);
  let h = cards.map(([k, v]) => `${k.padEnd(8)}= ${value(v)}`.padEnd(80)).join("") + "END".padEnd(80);
  h = h.padEnd(Math.ceil(h.length / 2880) * 2880);
  return Buffer.from(h, "ascii");
}

/** Deterministic pseudo-random numbers (mulberry32): the same inputs on every run. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** The raw images, in dir/raw: GRID x GRID tiles overlapping by about an eighth of their width. */
function makeInputs(dir: string): string[] {
  fs.mkdirSync(join(dir, "raw"), { recursive: true });
  const scale = 1 / 3600;
  const ra0 = 210.8, dec0 = 54.35;
  const step = PIXELS * scale * 0.875;
  const r = rng(42);
  const span = step * (GRID + 1);
  const stars = Array.from({ length: 40 * GRID * GRID }, () => ({ x: (r() - 0.5) * span, y: (r() - 0.5) * span, flux: 50 + 2000 * r() ** 4 }));
  const names: string[] = [];
  for (let gy = 0; gy < GRID; gy++) {
    for (let gx = 0; gx < GRID; gx++) {
      const i = gy * GRID + gx;
      const cx = (gx - (GRID - 1) / 2) * step, cy = (gy - (GRID - 1) / 2) * step;
      const rot = ((i % 5) - 2) * 1.5;
      const head = fitsHeader([
        ["SIMPLE", true], ["BITPIX", -32], ["NAXIS", 2], ["NAXIS1", PIXELS], ["NAXIS2", PIXELS],
        ["CTYPE1", "RA---TAN"], ["CTYPE2", "DEC--TAN"], ["EQUINOX", 2000],
        ["CRVAL1", ra0 + cx / Math.cos((dec0 * Math.PI) / 180)], ["CRVAL2", dec0 + cy],
        ["CRPIX1", PIXELS / 2 + 0.5], ["CRPIX2", PIXELS / 2 + 0.5], ["CDELT1", -scale], ["CDELT2", scale], ["CROTA2", rot],
      ]);
      const data = Buffer.alloc(Math.ceil((PIXELS * PIXELS * 4) / 2880) * 2880);
      const px = new Float32Array(PIXELS * PIXELS);
      const bg = 100 + 20 * r(), sx = (r() - 0.5) * 0.02, sy = (r() - 0.5) * 0.02;
      for (let y = 0, k = 0; y < PIXELS; y++) for (let x = 0; x < PIXELS; x++, k++) px[k] = bg + sx * x + sy * y + 3 * (r() + r() + r() - 1.5);
      const c = Math.cos((rot * Math.PI) / 180), s = Math.sin((rot * Math.PI) / 180);
      for (const st of stars) {
        // Sky offset from the tile centre to pixels (flat sky is close enough for these sizes).
        const dx = (st.x - cx) / scale, dy = (st.y - cy) / scale;
        const x0 = PIXELS / 2 - (c * dx - s * dy), y0 = PIXELS / 2 + (s * dx + c * dy);
        if (x0 < -4 || y0 < -4 || x0 > PIXELS + 4 || y0 > PIXELS + 4) continue;
        for (let y = Math.max(0, Math.floor(y0 - 4)); y <= Math.min(PIXELS - 1, Math.ceil(y0 + 4)); y++)
          for (let x = Math.max(0, Math.floor(x0 - 4)); x <= Math.min(PIXELS - 1, Math.ceil(x0 + 4)); x++) px[y * PIXELS + x]! += st.flux * Math.exp(-((x - x0) ** 2 + (y - y0) ** 2) / 3);
      }
      for (let k = 0; k < px.length; k++) data.writeFloatBE(px[k]!, k * 4);
      const name = `tile-${String(i).padStart(3, "0")}`;
      fs.writeFileSync(join(dir, "raw", `${name}.fits`), Buffer.concat([head, data]));
      names.push(name);
    }
  }
  return names;
}

// ---- the workflow -------------------------------------------------------------------------------

/** mConcatFit's job: each fit file holds "plus minus" and mFitplane's answer; out: the fits table mBgModel reads. */
const CONCAT = `#!/bin/sh
cols="plus minus a b c crpix1 crpix2 xmin xmax ymin ymax xcenter ycenter npixel rms boxx boxy boxwidth boxheight boxang"
{ printf '|'; for c in $cols; do printf '%16s|' "$c"; done; printf '\\n'
  for f in fit/*.txt; do
    awk '{ p = $1; m = $2; line = $0; sub(/^[^[]*\\[struct stat="OK", /, "", line); sub(/\\][ \\t]*$/, "", line);
      n = split(line, kv, ", "); printf " %16s %16s", p, m;
      for (i = 1; i <= n; i++) { split(kv[i], x, "="); printf " %16s", x[2] } printf "\\n" }' "$f"
  done; } > fits.tbl
`;

/** An image table's rows in file-name order: mImgtbl lists in readdir order, which differs between filesystems (and so would the mosaic's sums). */
const SORT_TABLE = `#!/bin/sh
grep '^[\\|]' "$1" > "$1.sorted"; grep -v '^[\\|]' "$1" | awk '{ print $NF "\t" $0 }' | sort | cut -f2- >> "$1.sorted"; mv "$1.sorted" "$1"
`;

const STAGES: Stage[] = [
  { name: "mImgtbl raw", tasks: () => [{ cmd: "mImgtbl raw raw.tbl && sh sort.sh raw.tbl" }] },
  { name: "mMakeHdr", tasks: () => [{ cmd: "mMakeHdr raw.tbl region.hdr" }] },
  { name: "mProjectPP", tasks: ({ images }) => images.map((n) => ({ cmd: `mProjectPP raw/${n}.fits proj/p${n}.fits region.hdr` })) },
  { name: "mImgtbl proj", tasks: () => [{ cmd: "mImgtbl proj images.tbl && sh sort.sh images.tbl" }] },
  { name: "mOverlaps", tasks: () => [{ cmd: "mOverlaps images.tbl diffs.tbl" }] },
  {
    name: "mDiffFit",
    tasks: ({ overlaps }) => Array.from({ length: overlaps }, (_, k) => ({
      // diffs.tbl row k (after its 3 header lines): cntr1 cntr2 plus.fits minus.fits diff.fits
      cmd: `set -- $(sed -n ${k + 4}p diffs.tbl) && mDiff proj/$3 proj/$4 diff/$5 region.hdr >/dev/null && mFitplane diff/$5 | sed "s/^/$1 $2 /" > fit/$5.txt`,
    })),
  },
  { name: "mConcatFit", tasks: () => [{ cmd: "sh concat.sh" }] },
  { name: "mBgModel", tasks: () => [{ cmd: "mBgModel images.tbl fits.tbl corrections.tbl" }] },
  { name: "mBackground", tasks: ({ images }) => images.map((n) => ({ cmd: `cd proj && mBackground -t p${n}.fits ../corr/p${n}.fits ../images.tbl ../corrections.tbl` })) },
  { name: "mImgtbl corr", tasks: () => [{ cmd: "mImgtbl corr corr.tbl && sh sort.sh corr.tbl" }] },
  { name: "mAdd", tasks: () => [{ cmd: "mAdd -p corr corr.tbl region.hdr mosaic.fits" }] },
  { name: "mShrink", tasks: () => [{ cmd: "mShrink mosaic.fits small.fits 4" }] },
  { name: "mViewer", tasks: () => [{ cmd: "mViewer -ct 1 -gray small.fits -2s max gaussian-log -out small.png" }] },
];

/** Run one task in dir; a Montage tool that fails says so on stdout ([struct stat="ERROR"...]). */
async function runTask(dir: string, t: Task): Promise<void> {
  const p = spawn(["sh", "-c", t.cmd], { cwd: dir, stdout: "pipe", stderr: "pipe" });
  const [out, err, code] = await Promise.all([new Response(p.stdout).text(), new Response(p.stderr).text(), p.exited]);
  if (code !== 0 || out.includes('stat="ERROR"')) throw new Error(`task failed in ${dir}: ${t.cmd}\n${out}${err}`);
}

/** The workflow on one target: dirs[i] is node i's view of the same shared directory. Seconds per stage. */
async function runWorkflow(dirs: string[], images: string[]): Promise<number[]> {
  const times: number[] = [];
  let next = 0;
  for (const st of STAGES) {
    const overlaps = fs.existsSync(join(dirs[0]!, "diffs.tbl")) ? fs.readFileSync(join(dirs[0]!, "diffs.tbl"), "utf8").trim().split("\n").length - 3 : 0;
    const tasks = st.tasks({ images, overlaps });
    const t0 = performance.now();
    const queues = dirs.map(() => [] as Task[]);
    tasks.forEach((t, i) => queues[(next + i) % dirs.length]!.push(t));
    next = (next + tasks.length) % dirs.length;
    await Promise.all(queues.flatMap((q, n) => Array.from({ length: PER }, async () => {
      for (let t; (t = q.shift()); ) await runTask(dirs[n]!, t);
    })));
    times.push((performance.now() - t0) / 1000);
  }
  return times;
}

/** Stage the inputs into the shared directory through node 0, then run the workflow there. */
async function onTarget(dirs: string[], src: string, images: string[], sub = "montage"): Promise<{ times: number[]; mosaic: string }> {
  const w = (d: string) => join(d, sub);
  fs.mkdirSync(w(dirs[0]!));
  for (const d of ["raw", "proj", "diff", "fit", "corr"]) fs.mkdirSync(join(w(dirs[0]!), d));
  for (const n of images) fs.copyFileSync(join(src, "raw", `${n}.fits`), join(w(dirs[0]!), "raw", `${n}.fits`));
  fs.writeFileSync(join(w(dirs[0]!), "concat.sh"), CONCAT);
  fs.writeFileSync(join(w(dirs[0]!), "sort.sh"), SORT_TABLE);
  spawnSync(["sync"]);
  const times = await runWorkflow(dirs.map(w), images);
  const mosaic = createHash("sha256").update(fs.readFileSync(join(w(dirs[1 % dirs.length]!), "mosaic.fits"))).digest("hex");
  return { times, mosaic };
}

// ---- targets --------------------------------------------------------------------------------------

async function mcfsNodes(work: string, stops: (() => Promise<void>)[]): Promise<string[]> {
  const sock = join(work, "redis.sock");
  const redis = spawn(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no"], { cwd: work, stdout: "ignore", stderr: "ignore" });
  stops.push(async () => {
    redis.kill();
    await redis.exited;
  });
  await until("redis socket", () => fs.existsSync(sock));
  fs.writeFileSync(join(work, "secret"), "bench-cluster-secret-0123456789");
  const dirs: string[] = [];
  for (const n of ["a", "b", "c"]) {
    const mnt = join(work, `${n}-mnt`);
    fs.mkdirSync(mnt);
    const p = spawn([MCFS, "daemon", "-f", mnt, "-r", join(work, `${n}-root`), "--cache-dir", join(work, `${n}-cache`), "-u", `unix://${sock}`, "-i", "127.0.0.1", "-p", String(await freePort()), "--cluster-secret-file", join(work, "secret")], { stdout: "ignore", stderr: "ignore" });
    stops.push(async () => {
      p.kill("SIGTERM");
      await p.exited;
      if (mounted(mnt)) spawnSync(["umount", "-l", mnt]);
    });
    await until(`mcfs ${n}`, () => mounted(mnt) || p.exitCode !== null);
    if (p.exitCode !== null) throw new Error(`mcfs node ${n} exited with ${p.exitCode}`);
    dirs.push(mnt);
  }
  return dirs;
}

function ensureMontage(): void {
  if (spawnSync(["sh", "-c", "command -v mProjectPP"]).exitCode === 0) return;
  const r = spawnSync(["apt-get", "install", "-y", "montage"], { stdout: "ignore", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`montage is not installed and apt-get could not install it: ${r.stderr.toString().slice(-400)}`);
}

ensureMontage();
const work = fs.mkdtempSync(join(tmpdir(), "mcfs-montage-"));
const stops: (() => Promise<void>)[] = [];
try {
  const src = join(work, "inputs");
  const images = makeInputs(src);
  const local = join(work, "local");
  fs.mkdirSync(local);
  await onTarget([local, local, local], src, images, "warm");
  const l = await onTarget([local, local, local], src, images);

  const nodes = await mcfsNodes(work, stops);
  await onTarget(nodes, src, images, "warm");
  const m = await onTarget(nodes, src, images);
  for (const s of stops.splice(0).reverse()) await s();

  let g: { times: number[]; mosaic: string } | string = glusterUnavailable() ?? "";
  if (!g) {
    let gl: Gluster | undefined;
    try {
      gl = await startGluster(join(work, "gluster"), 3);
      await onTarget(gl.clients, src, images, "warm");
      g = await onTarget(gl.clients, src, images);
    } catch (e) {
      g = `GlusterFS failed: ${(e as Error).message}`;
    } finally {
      await gl?.stop();
    }
  }
  const gg = typeof g === "string" ? undefined : g;
  const sum = (t: number[]) => t.reduce((a, b) => a + b, 0);
  const f = (n: number) => n.toFixed(2);
  const rows = STAGES.map((st, i) => `| ${st.name} | ${f(l.times[i]!)} | ${gg ? f(gg.times[i]!) : "n/a"} | ${f(m.times[i]!)} | ${f(m.times[i]! / l.times[i]!)} | ${gg ? f(m.times[i]! / gg.times[i]!) : "n/a"} |`);
  const table = [
    `Montage mosaic of ${GRID * GRID} synthetic ${PIXELS}x${PIXELS} images, ${PER} task(s) at a time per node (3 nodes; the local directory runs ${3 * PER} at once). Seconds; ratios above 1 mean mcfs took longer.`,
    "",
    "| stage | local dir | GlusterFS | mcfs | mcfs / local | mcfs / GlusterFS |",
    "|---|---:|---:|---:|---:|---:|",
    ...rows,
    `| **makespan** | **${f(sum(l.times))}** | **${gg ? f(sum(gg.times)) : "n/a"}** | **${f(sum(m.times))}** | **${f(sum(m.times) / sum(l.times))}** | **${gg ? f(sum(m.times) / sum(gg.times)) : "n/a"}** |`,
    "",
    `Mosaic identical to the local one: mcfs ${m.mosaic === l.mosaic ? "yes" : "NO"}${gg ? `, GlusterFS ${gg.mosaic === l.mosaic ? "yes" : "NO"}` : ""}.${typeof g === "string" && g ? ` GlusterFS: ${g}` : gg ? ` GlusterFS ${glusterVersion()}.` : ""}`,
  ].join("\n");
  console.log(table);
  if (OUT) fs.writeFileSync(OUT, table + "\n");
  if (m.mosaic !== l.mosaic) process.exitCode = 1;
} finally {
  for (const s of stops.reverse()) await s();
  spawnSync(["rm", "-rf", work]);
}
