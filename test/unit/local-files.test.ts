import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import type { LocalDir } from "../../src/local/local-dir.ts";
import { removeDir, replacingStale, type LiveAt } from "../../src/vfs/local-files.ts";
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

describe("replacingStale: a file of inode 5 about to be made at /d/x", () => {
  const live = (paths: Record<string, string>): LiveAt => async (id) => paths[id];
  const made = (r: LocalDir) => () => {
    r.remove("/d/x");
    const fd = r.openFile("/d/x", fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o644);
    r.markIdentity(fd, "5:g");
    fs.closeSync(fd);
    return "made";
  };

  test.each([
    ["nothing there", {}, {}],
    ["an older file of the same inode", { "/d/x": "5:old" }, {}],
    ["an unmarked file", { "/d/x": null }, {}],
    ["a leftover: another inode's, which the namespace has nowhere", { "/d/x": "7:g" }, {}],
    ["a leftover: another inode's, which the namespace has elsewhere", { "/d/x": "7:g" }, { "7:g": "/e/y" }],
  ] as const)("gives way: %s", async (_what, files, where) => {
    const { r } = rootWith({ "/d/keep": null, ...files });
    expect(await replacingStale(r, "/d/x", 5, live(where), made(r))).toBe("made");
    expect(r.identityOf("/d/x")).toBe("5:g");
  });

  test("another inode's file the namespace has at /d/x now stays, and the make is refused with ESTALE", async () => {
    const { r, base } = rootWith({ "/d/x": "7:g" });
    const e = await replacingStale(r, "/d/x", 5, live({ "7:g": "/d/x" }), made(r)).catch((err: unknown) => err);
    expect((e as { errno?: number }).errno).toBe(116);
    expect(r.identityOf("/d/x")).toBe("7:g");
    expect(fs.readFileSync(join(base, "d", "x"), "utf8")).toBe("/d/x");
  });

  test("a file moved onto /d/x while the namespace was asked about the leftover there is looked at again, and stays", async () => {
    const { r } = rootWith({ "/d/x": "7:g", "/d/y": "8:g" });
    const liveAt: LiveAt = async (id) => {
      // The leftover checked; meanwhile a rename here puts a live file at the path.
      if (id === "7:g") r.rename("/d/y", "/d/x");
      return id === "8:g" ? "/d/x" : undefined;
    };
    const e = await replacingStale(r, "/d/x", 5, liveAt, made(r)).catch((err: unknown) => err);
    expect((e as { errno?: number }).errno).toBe(116);
    expect(r.identityOf("/d/x")).toBe("8:g");
  });
});
