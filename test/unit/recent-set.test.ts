import { describe, expect, test } from "bun:test";
import { createRecentSet } from "../../src/util/recent-set.ts";

describe("recent set", () => {
  test("keeps the newest members up to its cap; re-adding one makes it newest", () => {
    const s = createRecentSet<number>(3);
    for (const v of [1, 2, 3]) s.add(v);
    s.add(1);
    s.add(4);
    expect([1, 2, 3, 4].map((v) => s.has(v))).toEqual([true, false, true, true]);
    s.add(5);
    expect([1, 3, 4, 5].map((v) => s.has(v))).toEqual([true, false, true, true]);
  });
});
