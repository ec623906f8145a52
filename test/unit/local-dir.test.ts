import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openLocalDir, relOf, type LocalDir } from "../../src/local/local-dir.ts";
import { E, FsError } from "../../src/util/errno.ts";

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL } = fs.constants;

/** The errno a call fails with (0: it did not). */
function errnoOf(fn: () => unknown): number {
  try {
    fn();
  } catch (e) {
    if (e instanceof FsError) return e.errno;
    throw e;
  }
  return 0;
}

/**
 * A top with ways out planted in it (a symlinked directory "out", a symlink "secretlink" to the file
 * outside/secret, "up" to ..) and a directory d holding f.
 */
function plantTree(prefix: string): { base: string; top: string; outside: string } {
  const base = fs.mkdtempSync(join(tmpdir(), prefix));
  const top = join(base, "top"), outside = join(base, "outside");
  fs.mkdirSync(top);
  fs.mkdirSync(outside);
  fs.writeFileSync(join(outside, "secret"), "secret");
  fs.symlinkSync(outside, join(top, "out"));
  fs.symlinkSync(join(outside, "secret"), join(top, "secretlink"));
  fs.symlinkSync("..", join(top, "up"));
  fs.mkdirSync(join(top, "d"));
  fs.writeFileSync(join(top, "d", "f"), "inside");
  return { base, top, outside };
}

/** A planted tree and a LocalDir on its top for the tests of one describe block, removed after them. */
function usePlantedDir(prefix: string): { base: string; top: string; outside: string; dir: LocalDir } {
  const t = {} as { base: string; top: string; outside: string; dir: LocalDir };
  beforeAll(() => {
    Object.assign(t, plantTree(prefix));
    t.dir = openLocalDir(t.top);
  });
  afterAll(() => {
    t.dir.close();
    fs.rmSync(t.base, { recursive: true, force: true });
  });
  return t;
}

/** Nothing outside a planted tree was changed. */
function outsideUntouched(outside: string): void {
  expect(fs.readdirSync(outside)).toEqual(["secret"]);
  expect(fs.readFileSync(join(outside, "secret"), "utf8")).toBe("secret");
}

/**
 * Confinement of the daemon's local directories with nothing but an ordinary user's rights (no chown,
 * no trusted.* attributes): the same as the root-only test/local-dir.test.ts checks, minus those.
 */
describe("local dir confinement (no root needed)", () => {
  const t = usePlantedDir("mcfs-unit-localdir-");

  test("relOf refuses unclean paths and maps the top to '.'", () => {
    expect(relOf("")).toBe(".");
    expect(relOf("/")).toBe(".");
    expect(relOf("/a/b")).toBe("a/b");
    for (const p of ["/a/../b", "/..", "/a/./b", "//a", "/a/", "/a\0b", "/."]) expect(errnoOf(() => relOf(p))).toBe(E.EINVAL);
  });

  test.each([
    ["open through a symlinked directory", () => t.dir.open("/out/secret", O_RDONLY)],
    ["create through a symlinked directory", () => t.dir.open("/out/new", O_WRONLY | O_CREAT, 0o644)],
    ["open a symlink", () => t.dir.open("/secretlink", O_RDONLY)],
    ["openFile a symlink", () => t.dir.openFile("/secretlink", O_RDONLY)],
    ["truncate through a symlink", () => t.dir.truncate("/secretlink", 0)],
    ["chmod through a symlinked directory", () => t.dir.chmod("/out/secret", 0o777)],
    ["utimes through a symlinked directory", () => t.dir.utimes("/out/secret", 1n, 1n)],
    ["mkdir through a symlinked directory", () => t.dir.mkdir("/out/x", 0o755)],
    ["unlink through a symlinked directory", () => t.dir.unlink("/out/secret")],
    ["symlink through a symlinked directory", () => t.dir.symlink("x", "/out/x")],
    ["rename out through a symlinked directory", () => t.dir.rename("/d/f", "/out/f")],
    ["rename in through a symlinked directory", () => t.dir.rename("/out/secret", "/d/got")],
    ["link through a symlinked directory", () => t.dir.link("/out/secret", "/d/got")],
    ["list a symlinked directory", () => t.dir.list("/out")],
    ["list through a symlink to ..", () => t.dir.list("/up/outside")],
    ["readlink through a symlinked directory", () => t.dir.readlink("/out/secret")],
    ["climb with ..", () => t.dir.open("/d/../../outside/secret", O_RDONLY)],
    ["remove .. ", () => t.dir.remove("/..")],
  ])("%s is refused", (_what, fn) => {
    expect(errnoOf(fn)).not.toBe(0);
    outsideUntouched(t.outside);
  });

  test("stat and typeOf see nothing through a symlink, and the symlink itself as a link", () => {
    expect(t.dir.stat("/out/secret")).toBeUndefined();
    expect(t.dir.typeOf("/out/secret")).toBeUndefined();
    expect(t.dir.typeOf("/out")).toBe("link");
    expect(t.dir.typeOf("/d")).toBe("dir");
    expect(t.dir.typeOf("/d/f")).toBe("file");
  });

  test("remove of a symlinked directory removes the link, not what it points to", () => {
    fs.symlinkSync(t.outside, join(t.top, "out2"));
    t.dir.remove("/out2");
    expect(fs.existsSync(join(t.top, "out2"))).toBe(false);
    outsideUntouched(t.outside);
  });

  test("ensureDir replaces a symlink in the way instead of following it", () => {
    fs.symlinkSync(t.outside, join(t.top, "way"));
    t.dir.ensureDir("/way/sub");
    expect(fs.lstatSync(join(t.top, "way")).isDirectory()).toBe(true);
    expect(fs.statSync(join(t.top, "way", "sub")).isDirectory()).toBe(true);
    outsideUntouched(t.outside);
  });

  test("openFile refuses what is not a regular file (EIO)", () => {
    expect(errnoOf(() => t.dir.openFile("/d", O_RDONLY))).toBe(E.EIO);
  });

  test("a symlink is stored as data and read back as it was", () => {
    t.dir.symlink("../../../etc/passwd", "/d/l");
    expect(t.dir.readlink("/d/l")).toBe("../../../etc/passwd");
    expect(errnoOf(() => t.dir.open("/d/l", O_RDONLY))).toBe(E.ELOOP);
  });

  test("paths longer than PATH_MAX work beneath the top, and stay confined", () => {
    const part = "p".repeat(200);
    const deep = "/" + Array.from({ length: 25 }, () => part).join("/");
    expect(deep.length).toBeGreaterThan(4096);
    t.dir.ensureDir(deep);
    const fd = t.dir.open(`${deep}/f`, O_WRONLY | O_CREAT | O_EXCL, 0o600);
    fs.writeSync(fd, "deep");
    fs.closeSync(fd);
    expect(t.dir.stat(`${deep}/f`)?.size).toBe(4n);
    expect(t.dir.list(deep)).toEqual([{ name: "f", type: "file" }]);
    // A symlink deep down, past the first PATH_MAX bytes (walked a directory at a time), is refused all the same.
    const far = deep.slice(0, 22 * 201);
    expect(far.length).toBeGreaterThan(4096);
    t.dir.symlink(t.outside, `${far}/link`);
    expect(errnoOf(() => t.dir.open(`${far}/link/secret`, O_RDONLY))).not.toBe(0);
    expect(errnoOf(() => t.dir.list(`${far}/link`))).not.toBe(0);
    expect(errnoOf(() => t.dir.open(`${far}/link/new`, O_WRONLY | O_CREAT, 0o644))).not.toBe(0);
    outsideUntouched(t.outside);
  });

  test("a name longer than NAME_MAX is refused with ENAMETOOLONG", () => {
    expect(errnoOf(() => t.dir.mkdir(`/${"n".repeat(256)}`, 0o755))).toBe(E.ENAMETOOLONG);
    expect(errnoOf(() => t.dir.open(`/d/${"n".repeat(256)}`, O_WRONLY | O_CREAT, 0o600))).toBe(E.ENAMETOOLONG);
  });
});

/** The errno a promise rejects with (0: it resolved; the fd it gave is closed). */
async function asyncErrno(p: Promise<number>): Promise<number> {
  try {
    fs.closeSync(await p);
  } catch (e) {
    if (e instanceof FsError) return e.errno;
    throw e;
  }
  return 0;
}

const fdCount = () => fs.readdirSync("/proc/self/fd").length;

describe("opens on the pool's threads (openFileAsync)", () => {
  const t = usePlantedDir("mcfs-unit-openpool-");

  test("confined as openFile is: symlinks, .., and what is not a regular file are refused", async () => {
    expect(await asyncErrno(t.dir.openFileAsync("/out/secret", O_RDONLY))).not.toBe(0);
    expect(await asyncErrno(t.dir.openFileAsync("/secretlink", O_RDONLY))).not.toBe(0);
    expect(await asyncErrno(t.dir.openFileAsync("/out/new", O_WRONLY | O_CREAT | O_EXCL, 0o644))).not.toBe(0);
    expect(await asyncErrno(t.dir.openFileAsync("/d/../../outside/secret", O_RDONLY))).toBe(E.EINVAL);
    expect(await asyncErrno(t.dir.openFileAsync("/d", O_RDONLY))).toBe(E.EIO);
    expect(await asyncErrno(t.dir.openFileAsync("/missing", O_RDONLY))).toBe(E.ENOENT);
    outsideUntouched(t.outside);
  });

  test("many at once: each answer is the file asked for, and no descriptor is left over", async () => {
    const before = fdCount();
    const n = 300;
    const fds = await Promise.all(Array.from({ length: n }, (_, i) => t.dir.openFileAsync(`/d/f${i}`, O_WRONLY | O_CREAT | O_EXCL, 0o640)));
    fds.forEach((fd, i) => {
      fs.writeSync(fd, `file ${i}`);
      fs.closeSync(fd);
    });
    const again = await Promise.all(Array.from({ length: n }, (_, i) => t.dir.openFileAsync(`/d/f${i}`, O_RDONLY)));
    again.forEach((fd, i) => {
      expect(fs.readFileSync(fd, "utf8")).toBe(`file ${i}`);
      fs.closeSync(fd);
    });
    expect(fdCount()).toBe(before);
  });

  test("a new file is given its owner, mode and identity on the same thread", async () => {
    const uid = process.getuid!(), gid = process.getgid!();
    const fd = await t.dir.openFileAsync("/d/kept", O_WRONLY | O_CREAT | O_EXCL, 0o751, { uid, gid, id: "42:abc" });
    try {
      const st = fs.fstatSync(fd);
      // The daemon's umask does not apply: the mode is the one asked for.
      expect(st.mode & 0o7777).toBe(0o751);
      expect([st.uid, st.gid]).toEqual([uid, gid]);
      // trusted.* takes root: without it no mark is kept (best effort, as markIdentity).
      expect(t.dir.readIdentity(fd)).toBe(uid === 0 ? "42:abc" : undefined);
    } finally {
      fs.closeSync(fd);
    }
    // A new file whose owner cannot be given is not handed out.
    if (uid !== 0) expect(await asyncErrno(t.dir.openFileAsync("/d/kept2", O_WRONLY | O_CREAT | O_EXCL, 0o600, { uid: 0, gid: 0, id: "1:x" }))).toBe(E.EPERM);
  });

  test("removeAsync: a file, a symlink (not what it points to), a directory with its contents; nothing there is fine; never through a symlink", async () => {
    fs.writeFileSync(join(t.top, "d", "rm-file"), "x");
    fs.symlinkSync(join(t.outside, "secret"), join(t.top, "d", "rm-link"));
    fs.mkdirSync(join(t.top, "d", "rm-t.dir", "sub"), { recursive: true });
    fs.writeFileSync(join(t.top, "d", "rm-t.dir", "sub", "f"), "x");
    for (const p of ["/d/rm-file", "/d/rm-link", "/d/rm-t.dir", "/d/nothing", "/out/secret", "/secretlink/x"]) await t.dir.removeAsync(p);
    for (const n of ["rm-file", "rm-link", "rm-t.dir"]) expect(fs.existsSync(join(t.top, "d", n))).toBe(false);
    outsideUntouched(t.outside);
    expect(fs.lstatSync(join(t.top, "secretlink")).isSymbolicLink()).toBe(true);
  });

  test("closed while calls are queued on the threads: they finish beneath it, then its descriptor goes", async () => {
    const other = openLocalDir(t.top);
    const before = fdCount();
    const owner = { uid: process.getuid!(), gid: process.getgid!(), id: "7:q" };
    // Creates always go to the threads (an open the kernel's caches resolve is made at once).
    const pending = Array.from({ length: 50 }, (_, i) => other.openFileAsync(`/d/q${i}`, O_WRONLY | O_CREAT | O_EXCL, 0o600, owner));
    const removed = other.removeAsync("/d/f2");
    other.close();
    for (const fd of await Promise.all(pending)) fs.closeSync(fd);
    await removed;
    expect(fs.existsSync(join(t.top, "d", "f2"))).toBe(false);
    for (let i = 0; i < 50; i++) expect(fs.statSync(join(t.top, "d", `q${i}`)).mode & 0o777).toBe(0o600);
    expect(fdCount()).toBe(before - 1);
  });

  test("calls after close are refused (EBADF) and close no descriptor: the number its directory had may be another file's by then", async () => {
    const other = openLocalDir(t.top);
    other.close();
    // The directory's number, taken by a file opened since.
    const taken = fs.openSync(join(t.top, "d", "f1"), "r");
    try {
      expect(await asyncErrno(other.openFileAsync("/d/late", O_WRONLY | O_CREAT | O_EXCL, 0o600, { uid: process.getuid!(), gid: process.getgid!(), id: "8:z" }))).toBe(E.EBADF);
      expect(await other.removeAsync("/d/f3").then(() => 0, (e: FsError) => e.errno)).toBe(E.EBADF);
      expect(errnoOf(() => other.openFile("/d/f1", O_RDONLY))).toBe(E.EBADF);
      other.close();
      expect(fs.existsSync(join(t.top, "d", "f3"))).toBe(true);
      expect(fs.existsSync(join(t.top, "d", "late"))).toBe(false);
      expect(fs.fstatSync(taken).isFile()).toBe(true);
    } finally {
      fs.closeSync(taken);
    }
  });
});
