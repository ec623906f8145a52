import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { createDirMarks } from "../../src/vfs/dir-marks.ts";
import { useTempRoot } from "../helpers/temp-root.ts";

const newRoot = useTempRoot("mcfs-dir-marks-");

describe("DirMarks: which local directory is which namespace directory's", () => {
  test("nothing at the path is absent; a directory marked as another's is other; its own, or one never marked, is ok", () => {
    const { root: r, base } = newRoot();
    const marks = createDirMarks(r);
    expect(marks.check("/d", 5)).toBe("absent");
    r.ensureDir("/d");
    r.ensureDir("/legacy");
    marks.mark("/d", 5);
    expect(marks.check("/d", 5)).toBe("ok");
    expect(marks.check("/d", 6)).toBe("other");
    expect(marks.check("/legacy", 7)).toBe("ok");
    fs.writeFileSync(join(base, "file"), "x");
    expect(marks.check("/file", 8)).toBe("absent");
    fs.symlinkSync(base, join(base, "link"));
    expect(marks.check("/link", 9)).toBe("absent");
  });

  test("the mark goes with its directory: after a swap here the path names the other one, seen once moves are told", () => {
    const { root: r } = newRoot();
    const marks = createDirMarks(r);
    r.ensureDir("/d");
    r.ensureDir("/e");
    r.ensureDir("/x");
    marks.mark("/d", 5);
    marks.mark("/e", 6);
    marks.mark("/x", 7);
    expect(marks.check("/d", 5)).toBe("ok");
    r.rename("/d", "/e", 2 /* RENAME_EXCHANGE */);
    // Seen at its path since the last move here: not looked at again until one is told; at another path, it is.
    expect(marks.check("/d", 5)).toBe("ok");
    expect(marks.check("/x", 5)).toBe("other");
    marks.moved();
    expect(marks.check("/d", 5)).toBe("other");
    expect(marks.check("/e", 5)).toBe("ok");
    expect(marks.check("/d", 6)).toBe("ok");
  });
});
