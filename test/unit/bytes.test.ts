import { afterAll, expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { writePieces, writePiecesSync } from "../../src/util/bytes.ts";

const dir = fs.mkdtempSync(join(tmpdir(), "mcfs-bytes-"));
afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));

/** Data as a stream that came in tiny pieces: more of them than one writev(2) takes (IOV_MAX, 1024), which Bun splits. */
const pieces = Array.from({ length: 2500 }, (_, i) => Buffer.alloc(1 + (i % 3), i & 255));
const whole = Buffer.concat(pieces);

test("data in more pieces than one writev(2) takes is written whole and in place, at an offset, both ways", async () => {
  for (const [name, write] of [["sync", async (fd: number, at: number) => writePiecesSync(fd, pieces, at)], ["async", (fd: number, at: number) => writePieces(fd, pieces, at)]] as const) {
    const path = join(dir, name);
    const fd = fs.openSync(path, "w+");
    await write(fd, 7);
    fs.closeSync(fd);
    const got = fs.readFileSync(path);
    expect(got.length).toBe(7 + whole.length);
    expect(got.subarray(7).equals(whole)).toBe(true);
  }
});
