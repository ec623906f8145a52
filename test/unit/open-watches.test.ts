import { describe, expect, test } from "bun:test";
import { createOpenWatches } from "../../src/vfs/open-watches.ts";

describe("open watches", () => {
  test("an answer is kept, and goes with a change of its file", () => {
    const w = createOpenWatches<string>(10);
    w.keep(w.asking(1), "v1");
    expect(w.get(1)).toBe("v1");
    w.drop([2]);
    expect(w.get(1)).toBe("v1");
    w.drop([1]);
    expect(w.get(1)).toBeUndefined();
  });

  test("an answer whose file changed while it was on its way is not kept (it may be older than the change heard)", () => {
    const w = createOpenWatches<string>(10);
    const early = w.asking(1);
    const other = w.asking(2);
    w.drop([1]);
    const late = w.asking(1);
    w.keep(early, "old");
    expect(w.get(1)).toBeUndefined();
    w.keep(other, "two");
    expect(w.get(2)).toBe("two");
    w.keep(late, "new");
    expect(w.get(1)).toBe("new");
  });

  test("clear drops everything, and answers on their way with it", () => {
    const w = createOpenWatches<string>(10);
    w.keep(w.asking(1), "a");
    const pending = w.asking(2);
    w.clear();
    w.keep(pending, "b");
    expect(w.get(1)).toBeUndefined();
    expect(w.get(2)).toBeUndefined();
    expect(w.size).toBe(0);
  });

  test("a question that failed keeps nothing and leaves nothing behind", () => {
    const w = createOpenWatches<string>(10);
    const a = w.asking(1);
    w.keep(a, undefined);
    expect(w.get(1)).toBeUndefined();
    // Its token is gone: a later drop has no stale question to mark, and a new one is kept.
    w.drop([1]);
    w.keep(w.asking(1), "x");
    expect(w.get(1)).toBe("x");
  });

  test("past the limit the oldest kept go first", () => {
    const w = createOpenWatches<number>(3);
    for (let i = 1; i <= 5; i++) w.keep(w.asking(i), i);
    expect(w.size).toBe(3);
    expect([1, 2, 3, 4, 5].map((i) => w.get(i))).toEqual([undefined, undefined, 3, 4, 5]);
  });
});
