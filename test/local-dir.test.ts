import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openLocalDir, type LocalDir } from "../src/local/local-dir.ts";
import { E, FsError } from "../src/util/errno.ts";

/** Every operation of the daemon's confined directory, against symlinks that lead out of it. */
describe("local dir: nothing leaves the top, no symlink is followed", () => {
  let base: string, top: string, outside: string, dir: LocalDir;
  const errnoOf = (fn: () => unknown) => {
    try {
      fn();
    } catch (e) {
      if (e instanceof FsError) return e.errno;
      throw e;
    }
    return 0;
  };

  beforeAll(() => {
    base = fs.mkdtempSync(join(tmpdir(), "mcfs-localdir-"));
    top = join(base, "root");
    outside = join(base, "outside");
    fs.mkdirSync(top);
    fs.mkdirSync(outside);
    fs.writeFileSync(join(outside, "secret"), "root only\n", { mode: 0o600 });
    fs.symlinkSync(outside, join(top, "linkdir"));
    fs.symlinkSync(join(outside, "secret"), join(top, "linkfile"));
    fs.mkdirSync(join(top, "d"));
    fs.writeFileSync(join(top, "d", "f"), "inside");
    dir = openLocalDir(top);
  });
  afterAll(() => {
    dir.close();
    fs.rmSync(base, { recursive: true, force: true });
  });

  const untouched = () => {
    expect(fs.readdirSync(outside)).toEqual(["secret"]);
    const st = fs.statSync(join(outside, "secret"));
    expect(st.mode & 0o7777).toBe(0o600);
    expect(st.size).toBe(10);
    expect(st.uid).toBe(0);
  };

  test.each([
    ["open a file through a symlinked directory", () => dir.open("/linkdir/secret", fs.constants.O_RDONLY)],
    ["create a file through a symlinked directory", () => dir.open("/linkdir/new", fs.constants.O_WRONLY | fs.constants.O_CREAT, 0o644)],
    ["open a symlink to a file", () => dir.open("/linkfile", fs.constants.O_RDONLY)],
    ["openFile a symlink to a file", () => dir.openFile("/linkfile", fs.constants.O_RDWR)],
    ["truncate through a symlink", () => dir.truncate("/linkfile", 3)],
    ["chmod through a symlink", () => dir.chmod("/linkfile", 0o777)],
    ["chmod through a symlinked directory", () => dir.chmod("/linkdir/secret", 0o777)],
    ["chown through a symlinked directory", () => dir.chown("/linkdir/secret", 65534, 65534)],
    ["utimes through a symlinked directory", () => dir.utimes("/linkdir/secret", 1n, 1_000_000_000_000_000_000n)],
    ["unlink through a symlinked directory", () => dir.unlink("/linkdir/secret")],
    ["mkdir through a symlinked directory", () => dir.mkdir("/linkdir/x", 0o755)],
    ["symlink through a symlinked directory", () => dir.symlink("/etc/passwd", "/linkdir/x")],
    ["rename out through a symlinked directory", () => dir.rename("/d/f", "/linkdir/f")],
    ["rename in through a symlinked directory", () => dir.rename("/linkdir/secret", "/d/stolen")],
    ["hard link through a symlinked directory", () => dir.link("/linkdir/secret", "/d/stolen")],
    ["list a symlinked directory", () => dir.list("/linkdir")],
    ["climb with ..", () => dir.open("/d/../../outside/secret", fs.constants.O_RDONLY)],
    ["an empty component", () => dir.open("//d/f", fs.constants.O_RDONLY)],
  ])("%s is refused", (_what, fn) => {
    expect(errnoOf(fn)).not.toBe(0);
    untouched();
  });

  test("the symlink's own attributes are what lchown/utimes change", () => {
    dir.chown("/linkfile", 65534, 65534);
    dir.utimes("/linkfile", 1_000_000_000n, 2_000_000_000n);
    const st = fs.lstatSync(join(top, "linkfile"));
    expect(st.uid).toBe(65534);
    expect(st.mtimeMs).toBe(2000);
    untouched();
  });

  test("a hard link of a symlink links the symlink, not its target", () => {
    dir.link("/linkfile", "/d/l2");
    expect(fs.lstatSync(join(top, "d", "l2")).isSymbolicLink()).toBe(true);
    dir.unlink("/d/l2");
  });

  test("removing a tree does not descend into symlinked directories", () => {
    fs.mkdirSync(join(top, "tree", "sub"), { recursive: true });
    fs.symlinkSync(outside, join(top, "tree", "sub", "out"));
    dir.remove("/tree");
    expect(fs.existsSync(join(top, "tree"))).toBe(false);
    untouched();
  });

  test("ensureDir replaces a symlink left in the way instead of following it", () => {
    fs.symlinkSync(outside, join(top, "stale"));
    dir.ensureDir("/stale/a/b");
    expect(fs.lstatSync(join(top, "stale")).isDirectory()).toBe(true);
    expect(fs.statSync(join(top, "stale", "a", "b")).isDirectory()).toBe(true);
    untouched();
  });

  test("openFile refuses a directory where a file was expected", () => {
    expect(errnoOf(() => dir.openFile("/d", fs.constants.O_RDONLY))).toBe(E.EIO);
  });

  test("a FIFO in the tree cannot block an open", () => {
    Bun.spawnSync(["mkfifo", join(top, "fifo")]);
    expect(errnoOf(() => dir.openFile("/fifo", fs.constants.O_RDONLY))).toBe(E.EIO);
  });

  test("paths longer than PATH_MAX below the top work (a directory at a time)", () => {
    const parts: string[] = [];
    for (let len = 0; len < 9000; len += 201) parts.push("x".repeat(200));
    const deep = `/${parts.join("/")}`;
    dir.ensureDir(deep);
    const fd = dir.openFile(`${deep}/f`, fs.constants.O_RDWR | fs.constants.O_CREAT | fs.constants.O_EXCL, 0o644);
    fs.writeSync(fd, "deep");
    fs.closeSync(fd);
    expect(dir.stat(`${deep}/f`)?.size).toBe(4n);
    dir.remove(`/${parts[0]}`);
    expect(dir.typeOf(`/${parts[0]}`)).toBeUndefined();
  });
});
