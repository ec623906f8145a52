import { expect, test } from "bun:test";
import * as fs from "node:fs";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { changeTime, nowNs } from "../../src/util/time.ts";

// A change mcfs stamps after one the kernel stamped on disk must not look older: stat would show
// ctime going backwards (chmod after a touch did, 1 run in 10).
test("nowNs is never behind a time the kernel stamped on a file before it", () => {
  const d = mkdtempSync(join(tmpdir(), "mcfs-time-"));
  try {
    const f = join(d, "f");
    let ahead = 0n;
    for (let i = 0; i < 3000; i++) {
      fs.writeFileSync(f, "x");
      const disk = fs.statSync(f, { bigint: true }).ctimeNs;
      const now = nowNs();
      if (disk - now > ahead) ahead = disk - now;
    }
    expect(ahead).toBe(0n);
  } finally {
    rmSync(d, { recursive: true, force: true });
  }
});

test("nowNs only goes forward, and follows the wall clock", () => {
  let last = nowNs();
  for (let i = 0; i < 100_000; i++) {
    const t = nowNs();
    expect(t > last).toBe(true);
    last = t;
  }
  const wall = BigInt(Date.now()) * 1_000_000n;
  expect(last - wall < 5_000_000n && wall - last < 5_000_000n).toBe(true);
});

test("changeTime keeps a disk stamp only when it is newer than the known change", () => {
  expect(changeTime(10n, 5n)).toBe(10n);
  expect(changeTime(5n, 10n)).toBe(11n);
  expect(changeTime(10n, 10n)).toBe(11n);
});
