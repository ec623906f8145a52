import { afterEach, beforeEach, expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { filePool } from "../../src/local/file-pool.ts";
import { createMemfd } from "../../src/cache/memfd.ts";
import { E } from "../../src/util/errno.ts";
import { waitFor } from "../helpers/env.ts";

let base: string;
beforeEach(() => void (base = fs.mkdtempSync(join(tmpdir(), "mcfs-unit-pool-"))));
afterEach(() => fs.rmSync(base, { recursive: true, force: true }));

test("copy: a memfd's bytes into a file by the pool's threads; a source shorter than asked gives EIO", async () => {
  const bytes = new Uint8Array(300_000).map((_, i) => (i * 31) & 255);
  const src = createMemfd();
  fs.writeSync(src, bytes, 0, bytes.length, 0);
  const dst = fs.openSync(join(base, "copy"), "w+");
  try {
    expect(await filePool().copy(src, dst, bytes.length)).toBe(0);
    expect(new Uint8Array(fs.readFileSync(join(base, "copy")))).toEqual(bytes);
    fs.ftruncateSync(dst, 0);
    expect(await filePool().copy(src, dst, bytes.length + 1)).toBe(-E.EIO);
  } finally {
    fs.closeSync(src);
    fs.closeSync(dst);
  }
});

test("writeOut: a range written to disk, and with drop gone from the page cache, its bytes the same; no descriptor gives EBADF", async () => {
  const file = join(base, "dropped");
  const bytes = new Uint8Array(8 << 20).map((_, i) => (i * 7) & 255);
  const fd = fs.openSync(file, "w+");
  const resident = () => Number(Bun.spawnSync(["fincore", "--bytes", "--noheadings", "--output", "RES", file]).stdout.toString().trim());
  try {
    fs.writeSync(fd, bytes, 0, bytes.length, 0);
    expect(resident()).toBe(bytes.length);
    expect(await filePool().writeOut(fd, 0, 2 << 20, false)).toBe(0);
    expect(resident()).toBe(bytes.length);
    expect(await filePool().writeOut(fd, 0, 4 << 20, true)).toBe(0);
    expect(resident()).toBe(4 << 20);
    expect(new Uint8Array(fs.readFileSync(file))).toEqual(bytes);
  } finally {
    fs.closeSync(fd);
  }
  expect(await filePool().writeOut(-1, 0, 4096, false)).toBe(-E.EBADF);
});

test("closeSoon: descriptors given in one turn are all closed after it, a few on the JS thread, many by one handoff to the pool", async () => {
  const open = (fd: number) => {
    try {
      fs.fstatSync(fd);
      return true;
    } catch {
      return false;
    }
  };
  for (const n of [1, 3, 4, 200]) {
    const fds = Array.from({ length: n }, (_, i) => fs.openSync(join(base, `f${n}-${i}`), "w"));
    for (const fd of fds) filePool().closeSoon(fd);
    // Still open in the turn that gave them: a caller's later work in it sees no closed number reused.
    expect(fds.every(open)).toBe(true);
    await waitFor(`${n} descriptors closed`, () => !fds.some(open));
  }
});
