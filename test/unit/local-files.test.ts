import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import type { LocalDir } from "../../src/local/local-dir.ts";
import { removeDir, type LiveAt } from "../../src/vfs/local-files.ts";
import { createLogger } from "../../src/util/log.ts";
import { useTempRoot } from "../helpers/temp-root.ts";

const log = createLogger({ format: "json" });
log.level = "silent";

const newRoot = useTempRoot("mcfs-local-files-");

/** A root with the files given (path: identity mark, or null for none), and where it is. */
function rootWith(files: Record<string, string | null>): { r: LocalDir; base: string } {
  const { root: r, base } = newRoot();
  for (const [p, id] of Object.entries(files)) {
    r.ensureDir(p.slice(0, p.lastIndexOf("/")));
    const fd = r.openFile(p, fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o644);
    fs.writeSync(fd, p);
    if (id !== null) r.markIdentity(fd, id);
    fs.closeSync(fd);
  }
  return { r, base };
}

describe("removeDir: a directory the namespace no longer has", () => {
  const live = (paths: Record<string, string>): LiveAt => async (id) => paths[id];

  test.each([
    ["leftovers (unmarked, or of files the namespace no longer has) go with it", { "/d/a": null, "/d/sub/b": "7:g" }, {}, [], ["/d"]],
    ["a file the namespace has elsewhere moves there, and the directory goes", { "/d/a": "5:g", "/d/b": null }, { "5:g": "/e/a" }, ["/e/a"], ["/d"]],
    ["a file the namespace has elsewhere, where something is already, stays with the directory", { "/d/a": "5:g", "/e/a": "6:g" }, { "5:g": "/e/a", "6:g": "/e/a" }, ["/d/a", "/e/a"], []],
  ] as const)("%s", async (_what, files, where, there, gone) => {
    const { r } = rootWith(files);
    await removeDir(r, "/d", live(where), log);
    for (const p of there) expect(r.typeOf(p)).toBe("file");
    for (const p of gone) expect(r.typeOf(p)).toBeUndefined();
  });

  test("a moved file keeps its bytes and its mark", async () => {
    const { r, base } = rootWith({ "/d/x/a": "9:q" });
    await removeDir(r, "/d", live({ "9:q": "/y/z/a" }), log);
    expect(fs.readFileSync(join(base, "y", "z", "a"), "utf8")).toBe("/d/x/a");
    expect(r.identityOf("/y/z/a")).toBe("9:q");
  });
});
