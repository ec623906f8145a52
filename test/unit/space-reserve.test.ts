import { afterEach, expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createSpaceReserve, type SpaceReserve } from "../../src/daemon/space-reserve.ts";
import { createLogger } from "../../src/util/log.ts";

const log = createLogger({ format: "json" });
log.level = "silent";
const made: { dir: string; r?: SpaceReserve }[] = [];
afterEach(() => {
  for (const m of made.splice(0)) {
    m.r?.stop();
    fs.rmSync(m.dir, { recursive: true, force: true });
  }
});
const dir = () => {
  const d = fs.mkdtempSync(join(tmpdir(), "mcfs-reserve-"));
  made.push({ dir: d });
  return d;
};

test("keeps its room as a file of its size, gives it back once, and never follows a symlink where it goes", () => {
  const d = dir();
  const held: boolean[] = [];
  const r = createSpaceReserve(d, 1 << 20, log, (h) => void held.push(h));
  made[0]!.r = r;
  expect(fs.statSync(join(d, "space-reserve")).size).toBe(1 << 20);
  expect(held).toEqual([false, true]);
  expect(r.release()).toBe(true);
  expect(held).toEqual([false, true, false]);
  expect(fs.existsSync(join(d, "space-reserve"))).toBe(false);
  expect(r.release()).toBe(false);

  const e = dir();
  const target = join(e, "elsewhere");
  fs.writeFileSync(target, "not the reserve's");
  fs.symlinkSync(target, join(e, "space-reserve"));
  const s = createSpaceReserve(e, 1 << 20, log);
  made[1]!.r = s;
  expect(fs.readFileSync(target, "utf8")).toBe("not the reserve's");
  expect(s.release()).toBe(false);
});

test("a reserve left by an earlier run is kept as it is, and given back", () => {
  const d = dir();
  fs.writeFileSync(join(d, "space-reserve"), Buffer.alloc(1 << 20, 1));
  const r = createSpaceReserve(d, 1 << 20, log);
  made[0]!.r = r;
  expect(fs.readFileSync(join(d, "space-reserve"))[0]).toBe(1);
  expect(r.release()).toBe(true);
});

test("a reserve cut short (a crash while it was written) is written again whole at the next start", () => {
  const d = dir();
  fs.writeFileSync(join(d, "space-reserve"), Buffer.alloc(12345, 1));
  const held: boolean[] = [];
  const r = createSpaceReserve(d, 1 << 20, log, (h) => void held.push(h));
  made[0]!.r = r;
  expect(fs.statSync(join(d, "space-reserve")).size).toBe(1 << 20);
  expect(held).toEqual([false, true]);
});
