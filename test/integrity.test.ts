import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { fuseUnavailable } from "./helpers/env.ts";
import { useOneNode } from "./helpers/node.ts";

const skip = fuseUnavailable();

/** Seeded PRNG so a failure can be replayed (the seed is printed in the test name). */
function rng(seed: number) {
  let s = seed >>> 0;
  return (n: number) => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return (((t ^ (t >>> 14)) >>> 0) % n);
  };
}

describe.skipIf(!!skip)("data integrity", () => {
  const node = useOneNode("integrity");

  const seed = Number(process.env.MCFS_SEED ?? Date.now() % 100000);
  test(`random writes at random offsets and sizes match a model byte for byte (seed ${seed})`, () => {
    const r = rng(seed);
    const f = join(node.daemon.mnt, "random.bin");
    const MAX = 48 << 20;
    let model = Buffer.alloc(0);
    let fd = fs.openSync(f, "w+");
    for (let i = 0; i < 400; i++) {
      const op = r(20);
      if (op === 0) {
        const len = r(MAX);
        fs.ftruncateSync(fd, len);
        const m = Buffer.alloc(len);
        model.copy(m, 0, 0, Math.min(len, model.length));
        model = m;
      } else if (op === 1) {
        fs.closeSync(fd);
        fd = fs.openSync(f, "r+");
      } else if (op < 5) {
        const off = r(Math.max(1, model.length));
        const len = r(1 << 20);
        const got = Buffer.alloc(len);
        const n = fs.readSync(fd, got, 0, len, off);
        expect(n).toBe(Math.max(0, Math.min(len, model.length - off)));
        expect(got.subarray(0, n).equals(model.subarray(off, off + n))).toBe(true);
      } else {
        const off = r(MAX);
        const len = 1 + (r(4) === 0 ? r(3 << 20) : r(9000));
        const data = randomBytes(len);
        expect(fs.writeSync(fd, data, 0, len, off)).toBe(len);
        if (off + len > model.length) {
          const m = Buffer.alloc(off + len);
          model.copy(m);
          model = m;
        }
        data.copy(model, off);
      }
    }
    fs.closeSync(fd);
    const back = fs.readFileSync(f);
    expect(back.length).toBe(model.length);
    expect(back.equals(model)).toBe(true);
    // the bytes on the node's disk are the same plain file
    expect(fs.readFileSync(join(node.daemon.root, "random.bin")).equals(model)).toBe(true);
  });

  test("many files of random sizes written and read back whole", () => {
    const dir = join(node.daemon.mnt, "many");
    fs.mkdirSync(dir);
    const r = rng(seed + 1);
    const files = new Map<string, Buffer>();
    for (let i = 0; i < 300; i++) {
      const data = randomBytes(r(200_000));
      files.set(`f${i}`, data);
      fs.writeFileSync(join(dir, `f${i}`), data);
    }
    for (const [n, data] of files) expect(fs.readFileSync(join(dir, n)).equals(data)).toBe(true);
  });

  test("files larger than 4 GiB: sparse, with data beyond the 32-bit boundary", () => {
    const f = join(node.daemon.mnt, "big.sparse");
    const fd = fs.openSync(f, "w+");
    const at = 5 * 1024 ** 3 + 12345;
    const data = randomBytes(1 << 20);
    fs.writeSync(fd, data, 0, data.length, at);
    fs.closeSync(fd);
    expect(fs.statSync(f).size).toBe(at + data.length);
    const back = Buffer.alloc(data.length);
    const rfd = fs.openSync(f, "r");
    expect(fs.readSync(rfd, back, 0, back.length, at)).toBe(data.length);
    expect(back.equals(data)).toBe(true);
    const hole = Buffer.alloc(4096, 1);
    fs.readSync(rfd, hole, 0, 4096, 4 * 1024 ** 3);
    expect(hole.every((b) => b === 0)).toBe(true);
    fs.closeSync(rfd);
    // sparse on the node's disk too: far fewer blocks than bytes
    expect(fs.statSync(join(node.daemon.root, "big.sparse")).blocks * 512).toBeLessThan(64 << 20);
    fs.unlinkSync(f);
  });

  test("concurrent writers to different regions of one file", async () => {
    const f = join(node.daemon.mnt, "regions.bin");
    const parts = Array.from({ length: 8 }, () => randomBytes(1 << 20));
    fs.writeFileSync(f, "");
    await Promise.all(parts.map((p, i) => Bun.spawn(["dd", `of=${f}`, "bs=1M", `seek=${i}`, "conv=notrunc", "status=none"], { stdin: p }).exited));
    expect(fs.readFileSync(f).equals(Buffer.concat(parts))).toBe(true);
  });
});
