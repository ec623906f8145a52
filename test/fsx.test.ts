import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { fuseUnavailable } from "./helpers/env.ts";
import type { TestDaemon } from "./helpers/daemon.ts";
import { useCluster } from "./helpers/node.ts";
import { runScript } from "./helpers/script.ts";

const skip = fuseUnavailable();

/**
 * fsx in the manner of the xfstests tool (not packaged for Debian): random writes, truncates, reads
 * and size checks through one descriptor kept open for many operations, every read checked against a
 * model of the file. Prints the digest of the content at each close.
 */
const FSX = `
const fs = require("node:fs");
const { createHash } = require("node:crypto");
const [f, opens, seedArg] = process.argv.slice(-3);
let seed = Number(seedArg);
// mulberry32: a PRNG whose sequence a seed reproduces.
const rnd = (n) => {
  seed = (seed + 0x6d2b79f5) | 0;
  let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
  t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
  return ((t ^ (t >>> 14)) >>> 0) % n;
};
const MAX = 300 * 1024;
let model = Buffer.from(fs.readFileSync(f));
const closed = [];
const fail = (what) => {
  console.error(what);
  process.exit(1);
};
for (let o = 0; o < Number(opens); o++) {
  const fd = fs.openSync(f, fs.constants.O_RDWR);
  for (let op = 0; op < 16; op++) {
    const kind = rnd(10);
    if (kind < 5) {
      const at = rnd(MAX), len = 1 + rnd(64 * 1024);
      const data = Buffer.alloc(len, 1 + rnd(255));
      if (fs.writeSync(fd, data, 0, len, at) !== len) fail("short write");
      if (at + len > model.length) model = Buffer.concat([model, Buffer.alloc(at + len - model.length)]);
      data.copy(model, at);
    } else if (kind < 7) {
      const size = rnd(MAX);
      fs.ftruncateSync(fd, size);
      model = size <= model.length ? model.subarray(0, size) : Buffer.concat([model, Buffer.alloc(size - model.length)]);
      model = Buffer.from(model);
    } else if (kind < 9) {
      const at = rnd(model.length + 1), len = rnd(128 * 1024);
      const got = Buffer.alloc(len);
      const n = fs.readSync(fd, got, 0, len, at);
      const want = model.subarray(at, at + len);
      if (n !== want.length || !got.subarray(0, n).equals(want)) fail("read at " + at + " of " + len + ": " + n + " bytes, not the " + want.length + " written (open " + o + ", op " + op + ")");
    } else if (fs.fstatSync(fd).size !== model.length) fail("size " + fs.fstatSync(fd).size + ", not " + model.length);
  }
  fs.closeSync(fd);
  if (!fs.readFileSync(f).equals(model)) fail("content after close differs from what was written (open " + o + ")");
  closed.push(createHash("sha1").update(model).digest("hex"));
}
console.log(JSON.stringify(closed));`;

/** Reads the whole file over and over on another node: the digest of each read, and errors by code. */
const READER = `
const fs = require("node:fs");
const { createHash } = require("node:crypto");
const [f, stopFile] = process.argv.slice(-2);
const seen = {}, errors = {};
let reads = 0;
while (!fs.existsSync(stopFile) || reads < 20) {
  reads++;
  try {
    const h = createHash("sha1").update(fs.readFileSync(f)).digest("hex");
    seen[h] = (seen[h] ?? 0) + 1;
  } catch (e) {
    errors[e.code] = (errors[e.code] ?? 0) + 1;
  }
}
console.log(JSON.stringify({ reads, seen, errors }));`;

describe.skipIf(!!skip)("fsx on one node while another reads the file", () => {
  const cluster = useCluster("fsx", ["a", "b"]);

  test("fsx finds every byte it wrote; the other node never gets an error, and each of its reads is a content some close left", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const initial = Buffer.alloc(200 * 1024, 7);
    fs.writeFileSync(join(a.mnt, "fsx"), initial);
    const stop = join(cluster.base, "fsx-done");
    const reader = runScript(READER, join(b.mnt, "fsx"), stop);
    // FSX_SEED replays a failing run's writes.
    const seed = Number(process.env.FSX_SEED) || 1 + Math.floor(Math.random() * 1e9);
    const w = await runScript(FSX, join(a.mnt, "fsx"), "150", String(seed));
    fs.writeFileSync(stop, "");
    const r = await reader;
    expect({ seed, err: w.err, code: w.code }).toEqual({ seed, err: "", code: 0 });
    expect(r.err).toBe("");
    const closes = JSON.parse(w.out) as string[];
    const closed = new Set<string>([createHash("sha1").update(initial).digest("hex"), ...closes]);
    const res = JSON.parse(r.out) as { reads: number; seen: Record<string, number>; errors: Record<string, number> };
    console.log(`seed ${seed}: ${closes.length} closes on A; B read ${res.reads} times, ${Object.keys(res.seen).length} distinct contents, errors ${JSON.stringify(res.errors)}`);
    expect(res.errors).toEqual({});
    const unknown = Object.keys(res.seen).filter((h) => !closed.has(h));
    expect(unknown).toEqual([]);
    // Once both are done, B reads the last close's content.
    expect(createHash("sha1").update(fs.readFileSync(join(b.mnt, "fsx"))).digest("hex")).toBe(closes.at(-1)!);
  }, 180_000);
});
