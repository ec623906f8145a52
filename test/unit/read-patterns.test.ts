import { describe, expect, test } from "bun:test";
import { createReadPatterns, programOf } from "../../src/vfs/remote/read-patterns.ts";

/** The lazy answers of n opens of program, each lazy one closed as readOn says. */
function opens(p: ReturnType<typeof createReadPatterns>, program: string, n: number, readOn: boolean): boolean[] {
  return Array.from({ length: n }, () => {
    const lazy = p.lazy(program);
    if (lazy) p.closed(program, readOn);
    return lazy;
  });
}

describe("read patterns", () => {
  test("a program never seen opens eagerly; one open in eight is a sample", () => {
    const p = createReadPatterns();
    const got = opens(p, "mAdd", 24, true);
    expect(got.map((l, i) => (l ? i + 1 : 0)).filter(Boolean)).toEqual([8, 16, 24]);
  });

  test("a program whose samples read only in part opens lazily from then on, and eagerly again once it reads on", () => {
    const p = createReadPatterns();
    // Four samples (opens 8, 16, 24, 32) read only a header.
    opens(p, "mImgtbl", 32, false);
    expect(opens(p, "mImgtbl", 10, false).every(Boolean)).toBe(true);
    // Now it reads whole files: two of its last four lazy opens read on, and it is eager again (but for its samples).
    opens(p, "mImgtbl", 2, true);
    expect(opens(p, "mImgtbl", 8, true).filter(Boolean)).toHaveLength(1);
  });

  test("programs are learned apart", () => {
    const p = createReadPatterns();
    opens(p, "mImgtbl", 32, false);
    expect(p.lazy("mImgtbl")).toBe(true);
    expect(p.lazy("mDiff")).toBe(false);
  });

  test("programOf reads a process's comm; a process gone has none", () => {
    expect(programOf(process.pid)).toBe(require("node:fs").readFileSync(`/proc/${process.pid}/comm`, "utf8").trim());
    expect(programOf(2 ** 22 + 12345)).toBeUndefined();
  });
});
