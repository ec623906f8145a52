import { describe, expect, test } from "bun:test";
import { parseHolders, parseRecord } from "../../src/meta/redis-store.ts";

/** How redis-store.ts reads what its scripts store (every field a decimal string, some optional). */
describe("record codec", () => {
  test("every field of a full record", () => {
    const r = parseRecord(12, { m: "33188", u: "1000", g: "100", r: "5", s: "4096", n: "2", a: "1700000000000000001", t: "1700000000000000002", c: "1700000000000000003", v: "9007199254740991", gn: "00ff", p: "7", nm: "a b", l: "../t" });
    expect(r).toEqual({ ino: 12, mode: 0o100644, uid: 1000, gid: 100, rdev: 5, size: 4096, nlink: 2, atime: 1700000000000000001n, mtime: 1700000000000000002n, ctime: 1700000000000000003n, version: Number.MAX_SAFE_INTEGER, gen: "00ff", parent: 7, name: "a b", target: "../t" });
  });

  test("fields older records lack take their defaults; no target unless stored", () => {
    const r = parseRecord(1, { m: "16877" });
    expect(r).toEqual({ ino: 1, mode: 0o40755, uid: 0, gid: 0, rdev: 0, size: 0, nlink: 1, atime: 0n, mtime: 0n, ctime: 0n, version: 1, gen: "", parent: 0, name: "" });
    expect("target" in r).toBe(false);
  });

  test("times keep nanoseconds beyond 2^53", () => {
    expect(parseRecord(2, { m: "33188", t: "9223372036854775807" }).mtime).toBe(9223372036854775807n);
  });

  test("holders: versions, and cached copies with the run that made them", () => {
    expect(parseHolders({ a: "5", b: "6" }, { c: "5 1700000000000", d: "7" })).toEqual({
      data: new Map([["a", 5], ["b", 6]]),
      cached: new Map([["c", { version: 5, startedAt: 1700000000000 }], ["d", { version: 7, startedAt: 0 }]]),
    });
    expect(parseHolders({}, {})).toEqual({ data: new Map(), cached: new Map() });
  });
});
