/**
 * POSIX behaviour suite over any directory: the mcfs mount, or a plain directory as the reference that
 * proves the expectations themselves. Each case uses its own subdirectory of dir().
 */
import { expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "bun";
import { constants as osc } from "node:os";
import { errCode, waitFor } from "../helpers/env.ts";
import { readDirFd, rewindFd, renameat2, setxattr, getxattr, listxattr, removexattr } from "../helpers/libc.ts";

const E = osc.errno;


/** Run a shell command as user nobody; returns [exit code, stderr]. */
function asNobody(cmd: string): [number, string] {
  const r = spawnSync(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", "sh", "-c", cmd], { stderr: "pipe", stdout: "pipe" });
  return [r.exitCode ?? -1, r.stderr.toString() + r.stdout.toString()];
}

export function posixSuite(dir: () => string, label: string): void {
  let n = 0;
  const fresh = () => {
    const d = join(dir(), `case-${++n}`);
    fs.mkdirSync(d);
    return d;
  };

  test(`${label}: create, write, read back, stat`, () => {
    const d = fresh();
    const f = join(d, "a.txt");
    fs.writeFileSync(f, "hello world\n");
    expect(fs.readFileSync(f, "utf8")).toBe("hello world\n");
    const st = fs.statSync(f);
    expect(st.isFile()).toBe(true);
    expect(st.size).toBe(12);
    expect(st.nlink).toBe(1);
    expect(fs.readdirSync(d)).toEqual(["a.txt"]);
  });

  test(`${label}: ENOENT, EEXIST, ENOTDIR, EISDIR, ENOTEMPTY, ENAMETOOLONG`, () => {
    const d = fresh();
    const f = join(d, "f");
    fs.writeFileSync(f, "x");
    expect(errCode(() => fs.readFileSync(join(d, "missing")))).toBe("ENOENT");
    expect(errCode(() => fs.statSync(join(d, "missing", "x")))).toBe("ENOENT");
    expect(errCode(() => fs.openSync(f, fs.constants.O_CREAT | fs.constants.O_EXCL | fs.constants.O_WRONLY))).toBe("EEXIST");
    fs.mkdirSync(join(d, "sub"));
    expect(errCode(() => fs.mkdirSync(join(d, "sub")))).toBe("EEXIST");
    expect(errCode(() => fs.mkdirSync(f))).toBe("EEXIST");
    expect(errCode(() => fs.statSync(join(f, "x")))).toBe("ENOTDIR");
    expect(errCode(() => fs.readdirSync(f))).toBe("ENOTDIR");
    expect(errCode(() => fs.rmdirSync(f))).toBe("ENOTDIR");
    expect(errCode(() => fs.unlinkSync(join(d, "sub")))).toBe("EISDIR");
    expect(errCode(() => fs.openSync(join(d, "sub"), "w"))).toBe("EISDIR");
    fs.writeFileSync(join(d, "sub", "child"), "c");
    expect(errCode(() => fs.rmdirSync(join(d, "sub")))).toBe("ENOTEMPTY");
    expect(errCode(() => fs.writeFileSync(join(d, "n".repeat(256)), "x"))).toBe("ENAMETOOLONG");
    expect(errCode(() => fs.mkdirSync(join(d, "n".repeat(256))))).toBe("ENAMETOOLONG");
    fs.writeFileSync(join(d, "n".repeat(255)), "ok");
    expect(fs.readFileSync(join(d, "n".repeat(255)), "utf8")).toBe("ok");
    expect(errCode(() => fs.unlinkSync(join(d, "missing")))).toBe("ENOENT");
    expect(errCode(() => fs.rmdirSync(join(d, "missing")))).toBe("ENOENT");
  });

  test(`${label}: rename files and whole directories`, () => {
    const d = fresh();
    fs.mkdirSync(join(d, "a/b/c"), { recursive: true });
    fs.writeFileSync(join(d, "a/b/c/deep"), "deep");
    fs.writeFileSync(join(d, "a/top"), "top");
    fs.renameSync(join(d, "a"), join(d, "z"));
    expect(fs.existsSync(join(d, "a"))).toBe(false);
    expect(fs.readFileSync(join(d, "z/b/c/deep"), "utf8")).toBe("deep");
    expect(fs.readFileSync(join(d, "z/top"), "utf8")).toBe("top");
    fs.mkdirSync(join(d, "other"));
    fs.renameSync(join(d, "z/b"), join(d, "other/b2"));
    expect(fs.readFileSync(join(d, "other/b2/c/deep"), "utf8")).toBe("deep");
    expect(fs.statSync(join(d, "z")).nlink).toBe(2);
    expect(fs.statSync(join(d, "other")).nlink).toBe(3);
    // file over file replaces it
    fs.writeFileSync(join(d, "f1"), "one");
    fs.writeFileSync(join(d, "f2"), "two");
    fs.renameSync(join(d, "f1"), join(d, "f2"));
    expect(fs.readFileSync(join(d, "f2"), "utf8")).toBe("one");
    expect(fs.existsSync(join(d, "f1"))).toBe(false);
    // dir over non-empty dir, dir over file, file over dir, dir into itself
    fs.mkdirSync(join(d, "e1"));
    fs.mkdirSync(join(d, "e2"));
    fs.writeFileSync(join(d, "e2/x"), "x");
    expect(errCode(() => fs.renameSync(join(d, "e1"), join(d, "e2")))).toBe("ENOTEMPTY");
    expect(errCode(() => fs.renameSync(join(d, "e1"), join(d, "f2")))).toBe("ENOTDIR");
    expect(errCode(() => fs.renameSync(join(d, "f2"), join(d, "e1")))).toBe("EISDIR");
    expect(errCode(() => fs.renameSync(join(d, "e2"), join(d, "e2/x2")))).toBe("EINVAL");
    expect(errCode(() => fs.renameSync(join(d, "nope"), join(d, "x")))).toBe("ENOENT");
    // dir over empty dir replaces it
    fs.renameSync(join(d, "e2"), join(d, "e1"));
    expect(fs.readFileSync(join(d, "e1/x"), "utf8")).toBe("x");
  });

  test(`${label}: RENAME_NOREPLACE and RENAME_EXCHANGE`, () => {
    const d = fresh();
    fs.writeFileSync(join(d, "a"), "A");
    fs.writeFileSync(join(d, "b"), "B");
    expect(renameat2(join(d, "a"), join(d, "b"), 1)).toBe(E.EEXIST);
    expect(renameat2(join(d, "a"), join(d, "c"), 1)).toBe(0);
    expect(fs.readFileSync(join(d, "c"), "utf8")).toBe("A");
    expect(renameat2(join(d, "c"), join(d, "b"), 2)).toBe(0);
    expect(fs.readFileSync(join(d, "c"), "utf8")).toBe("B");
    expect(fs.readFileSync(join(d, "b"), "utf8")).toBe("A");
    expect(renameat2(join(d, "c"), join(d, "none"), 2)).toBe(E.ENOENT);
    fs.mkdirSync(join(d, "dir"));
    fs.writeFileSync(join(d, "dir/in"), "in");
    expect(renameat2(join(d, "dir"), join(d, "b"), 2)).toBe(0);
    expect(fs.readFileSync(join(d, "b/in"), "utf8")).toBe("in");
    expect(fs.readFileSync(join(d, "dir"), "utf8")).toBe("A");
  });

  test(`${label}: EXDEV renaming across filesystems`, () => {
    const d = fresh();
    fs.writeFileSync(join(d, "x"), "x");
    const other = fs.mkdtempSync("/dev/shm/mcfs-exdev-");
    try {
      expect(errCode(() => fs.renameSync(join(d, "x"), join(other, "x")))).toBe("EXDEV");
      expect(errCode(() => fs.linkSync(join(d, "x"), join(other, "x")))).toBe("EXDEV");
    } finally {
      fs.rmSync(other, { recursive: true, force: true });
    }
  });

  test(`${label}: chmod, chown, nanosecond utimens`, () => {
    const d = fresh();
    const f = join(d, "f");
    fs.writeFileSync(f, "x");
    fs.chmodSync(f, 0o640);
    expect(fs.statSync(f).mode & 0o7777).toBe(0o640);
    fs.chownSync(f, 1234, 5678);
    expect(fs.statSync(f).uid).toBe(1234);
    expect(fs.statSync(f).gid).toBe(5678);
    const r = spawnSync(["touch", "-d", "2001-02-03 04:05:06.123456789 UTC", f]);
    expect(r.exitCode).toBe(0);
    const st = fs.statSync(f, { bigint: true });
    expect(st.mtimeNs).toBe(981173106123456789n);
    expect(st.atimeNs).toBe(981173106123456789n);
    spawnSync(["touch", "-m", "-d", "2010-01-01 00:00:00.000000001 UTC", f]);
    expect(fs.statSync(f, { bigint: true }).mtimeNs).toBe(1262304000000000001n);
    expect(fs.statSync(f, { bigint: true }).atimeNs).toBe(981173106123456789n);
    const before = fs.statSync(f, { bigint: true }).ctimeNs;
    fs.chmodSync(f, 0o600);
    expect(fs.statSync(f, { bigint: true }).ctimeNs >= before).toBe(true);
  });

  test(`${label}: truncate, ftruncate, sparse files, O_APPEND`, () => {
    const d = fresh();
    const f = join(d, "t");
    fs.writeFileSync(f, "0123456789");
    fs.truncateSync(f, 4);
    expect(fs.readFileSync(f, "utf8")).toBe("0123");
    fs.truncateSync(f, 8);
    expect([...fs.readFileSync(f)]).toEqual([48, 49, 50, 51, 0, 0, 0, 0]);
    const fd = fs.openSync(f, "r+");
    fs.ftruncateSync(fd, 2);
    expect(fs.fstatSync(fd).size).toBe(2);
    fs.writeSync(fd, Buffer.from("Z"), 0, 1, 1 << 20);
    fs.closeSync(fd);
    const st = fs.statSync(f);
    expect(st.size).toBe((1 << 20) + 1);
    const all = fs.readFileSync(f);
    expect(all[0]).toBe(48);
    expect(all.subarray(2, 1 << 20).every((b) => b === 0)).toBe(true);
    expect(all[1 << 20]).toBe(90);
    const a = join(d, "app");
    fs.writeFileSync(a, "start;");
    const f1 = fs.openSync(a, "a");
    const f2 = fs.openSync(a, "a");
    fs.writeSync(f1, "one;");
    fs.writeSync(f2, "two;");
    fs.writeSync(f1, "three;");
    fs.closeSync(f1);
    fs.closeSync(f2);
    expect(fs.readFileSync(a, "utf8")).toBe("start;one;two;three;");
    fs.writeFileSync(f, "short");
    expect(fs.readFileSync(f, "utf8")).toBe("short");
  });

  // Close-to-open on one node: each open right after a close sees what the close left (its O_TRUNC
  // cuts the whole of it, its size is the one just written).
  test(`${label}: a file rewritten, appended to and reopened at once reads what each close left`, () => {
    const r = join(fresh(), "rewritten");
    for (let i = 0; i < 50; i++) {
      fs.writeFileSync(r, `a longer first line ${i}\n`);
      fs.writeFileSync(r, `x${i}\n`);
      expect(fs.readFileSync(r, "utf8")).toBe(`x${i}\n`);
      fs.appendFileSync(r, "y");
      const fd = fs.openSync(r, "r");
      try {
        expect(fs.fstatSync(fd).size).toBe(`x${i}\ny`.length);
      } finally {
        fs.closeSync(fd);
      }
    }
  });

  // A truncate by path changes the file under a reader's open handle: the reader, a stat and a new
  // open all see the new size (extended: zeros), during and after the reader.
  test(`${label}: a file truncated by path while open for reading has the new size for the reader and for stat`, () => {
    const f = join(fresh(), "cut-under-reader");
    fs.writeFileSync(f, Buffer.alloc(1000, 1));
    const fd = fs.openSync(f, "r");
    try {
      expect(fs.readSync(fd, Buffer.alloc(10), 0, 10, 0)).toBe(10);
      fs.truncateSync(f, 10);
      expect(fs.statSync(f).size).toBe(10);
      expect(fs.fstatSync(fd).size).toBe(10);
      fs.truncateSync(f, 5000);
      expect(fs.statSync(f).size).toBe(5000);
      const b = Buffer.alloc(100, 7);
      expect(fs.readSync(fd, b, 0, 100, 4000)).toBe(100);
      expect(b.equals(Buffer.alloc(100))).toBe(true);
    } finally {
      fs.closeSync(fd);
    }
    expect(fs.statSync(f).size).toBe(5000);
    const all = fs.readFileSync(f);
    expect(all.length).toBe(5000);
    expect(all.subarray(0, 10).equals(Buffer.alloc(10, 1))).toBe(true);
    expect(all.subarray(10).equals(Buffer.alloc(4990))).toBe(true);
  });

  // A listing is read between opendir and each getdents; readdirplus makes the kernel keep each name
  // it is given. One given under a name it no longer has made the next create of that name open (and
  // truncate) the file that moved away.
  test(`${label}: a name renamed or removed between opendir and reading the listing is not handed out under its old name`, () => {
    const d = fresh();
    fs.writeFileSync(join(d, "a"), "original a");
    fs.writeFileSync(join(d, "gone"), "gone");
    fs.writeFileSync(join(d, "stays"), "stays");
    const dir = fs.openSync(d, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    fs.renameSync(join(d, "a"), join(d, "b"));
    fs.unlinkSync(join(d, "gone"));
    const listed = readDirFd(dir);
    fs.closeSync(dir);
    expect(listed).toContain("stays");
    expect(fs.existsSync(join(d, "a"))).toBe(false);
    expect(fs.existsSync(join(d, "gone"))).toBe(false);
    fs.writeFileSync(join(d, "a"), "new a");
    fs.writeFileSync(join(d, "gone"), "new gone");
    expect(fs.readFileSync(join(d, "b"), "utf8")).toBe("original a");
    expect(fs.readFileSync(join(d, "a"), "utf8")).toBe("new a");
    expect(fs.readFileSync(join(d, "gone"), "utf8")).toBe("new gone");
    expect(fs.statSync(join(d, "a")).ino).not.toBe(fs.statSync(join(d, "b")).ino);
    expect(fs.readdirSync(d).sort()).toEqual(["a", "b", "gone", "stays"]);
  });

  test(`${label}: a listing goes on past a stretch of names removed since opendir, longer than one reply`, () => {
    const d = fresh();
    for (let i = 0; i < 100; i++) fs.writeFileSync(join(d, `a${String(i).padStart(3, "0")}`), "gone");
    for (let i = 0; i < 20; i++) fs.writeFileSync(join(d, `z${i}`), "stays");
    const dir = fs.openSync(d, fs.constants.O_RDONLY | fs.constants.O_DIRECTORY);
    for (let i = 0; i < 100; i++) fs.unlinkSync(join(d, `a${String(i).padStart(3, "0")}`));
    const listed = readDirFd(dir);
    fs.closeSync(dir);
    expect(listed.filter((n) => n.startsWith("z")).sort()).toEqual(Array.from({ length: 20 }, (_, i) => `z${i}`).sort());
  });

  // O_TRUNC cuts what the file holds now, also bytes another open wrote and has not closed yet, in any
  // access mode, and marks mtime and ctime even when there was nothing to cut.
  test(`${label}: O_TRUNC empties the file whatever wrote it last, in every access mode, and always moves mtime`, () => {
    const d = fresh();
    for (const mode of [fs.constants.O_WRONLY, fs.constants.O_RDWR, fs.constants.O_RDONLY]) {
      const f = join(d, `t${mode}`);
      const w = fs.openSync(f, "w");
      try {
        fs.writeSync(w, "hello");
        const t = fs.openSync(f, mode | fs.constants.O_TRUNC);
        fs.closeSync(t);
        expect(fs.statSync(f).size).toBe(0);
        fs.writeSync(w, "!", 0);
      } finally {
        fs.closeSync(w);
      }
      expect(fs.readFileSync(f, "utf8")).toBe("!");
    }
    const empty = join(d, "empty");
    fs.writeFileSync(empty, "");
    fs.utimesSync(empty, 1_000_000, 1_000_000);
    fs.closeSync(fs.openSync(empty, fs.constants.O_WRONLY | fs.constants.O_TRUNC));
    expect(fs.statSync(empty).mtimeMs).toBeGreaterThan(1_000_000_000);
  });

  // The bytes of a file open while it was renamed, or while its first name went and another file took
  // that name, stay under the names the file has now: writes through another open land there.
  test(`${label}: a file renamed, or relinked and unlinked, while open keeps its bytes under its new name`, () => {
    const d = fresh();
    const [a, b] = [join(d, "a"), join(d, "b")];
    fs.writeFileSync(a, "old");
    const held = fs.openSync(a, "r");
    try {
      fs.renameSync(a, b);
      const w = fs.openSync(b, "r+");
      fs.writeSync(w, "NEW");
      fs.closeSync(w);
      expect(fs.readFileSync(b, "utf8")).toBe("NEW");
      fs.writeFileSync(a, "unrelated");
    } finally {
      fs.closeSync(held);
    }
    fs.appendFileSync(b, "+b");
    expect(fs.readFileSync(b, "utf8")).toBe("NEW+b");
    expect(fs.readFileSync(a, "utf8")).toBe("unrelated");

    const [x, y] = [join(d, "x"), join(d, "y")];
    const fd = fs.openSync(x, "w+");
    try {
      fs.writeSync(fd, "original");
      fs.linkSync(x, y);
      fs.unlinkSync(x);
      fs.writeFileSync(x, "unrelated new file");
    } finally {
      fs.closeSync(fd);
    }
    expect(fs.readFileSync(y, "utf8")).toBe("original");
    fs.appendFileSync(y, "+y");
    expect(fs.readFileSync(y, "utf8")).toBe("original+y");
    expect(fs.readFileSync(x, "utf8")).toBe("unrelated new file");
  });

  test(`${label}: symlinks and hard links`, () => {
    const d = fresh();
    fs.writeFileSync(join(d, "target"), "T");
    fs.symlinkSync("target", join(d, "sl"));
    expect(fs.readlinkSync(join(d, "sl"))).toBe("target");
    expect(fs.lstatSync(join(d, "sl")).isSymbolicLink()).toBe(true);
    expect(fs.readFileSync(join(d, "sl"), "utf8")).toBe("T");
    fs.symlinkSync("/nonexistent/abs", join(d, "dangling"));
    expect(fs.readlinkSync(join(d, "dangling"))).toBe("/nonexistent/abs");
    expect(errCode(() => fs.statSync(join(d, "dangling")))).toBe("ENOENT");
    fs.linkSync(join(d, "target"), join(d, "hard"));
    const a = fs.statSync(join(d, "target")), b = fs.statSync(join(d, "hard"));
    expect(a.ino).toBe(b.ino);
    expect(a.nlink).toBe(2);
    fs.writeFileSync(join(d, "hard"), "changed");
    expect(fs.readFileSync(join(d, "target"), "utf8")).toBe("changed");
    fs.unlinkSync(join(d, "target"));
    expect(fs.readFileSync(join(d, "hard"), "utf8")).toBe("changed");
    expect(fs.statSync(join(d, "hard")).nlink).toBe(1);
    fs.mkdirSync(join(d, "dd"));
    expect(errCode(() => fs.linkSync(join(d, "dd"), join(d, "dd2")))).toBe("EPERM");
  });

  test(`${label}: extended attributes`, () => {
    const d = fresh();
    const f = join(d, "x");
    fs.writeFileSync(f, "x");
    const v = new Uint8Array([0, 1, 2, 255, 0, 7]);
    expect(setxattr(f, "user.bin", v)).toBe(0);
    expect(setxattr(f, "user.s", Buffer.from("val"))).toBe(0);
    expect([...(getxattr(f, "user.bin") as Uint8Array)]).toEqual([...v]);
    expect((listxattr(f) as string[]).sort()).toEqual(["user.bin", "user.s"]);
    expect(setxattr(f, "user.s", Buffer.from("v2"), 1)).toBe(E.EEXIST);
    expect(setxattr(f, "user.none", Buffer.from("v2"), 2)).toBe(E.ENODATA);
    expect(getxattr(f, "user.none")).toBe(E.ENODATA);
    expect(removexattr(f, "user.s")).toBe(0);
    expect(removexattr(f, "user.s")).toBe(E.ENODATA);
    expect(listxattr(f)).toEqual(["user.bin"]);
    expect(setxattr(f, "user.", Buffer.from("v"))).toBe(E.EINVAL);
  });

  // trusted.* is for the administrator alone (the kernel refuses its reads to others): not even its names.
  test(`${label}: another user's list of extended attributes leaves out trusted.*`, () => {
    const d = fresh();
    const f = join(d, "x");
    fs.writeFileSync(f, "x");
    fs.chmodSync(d, 0o755);
    expect(setxattr(f, "trusted.t", Buffer.from("1"))).toBe(0);
    expect(setxattr(f, "user.u", Buffer.from("1"))).toBe(0);
    expect((listxattr(f) as string[]).sort()).toEqual(["trusted.t", "user.u"]);
    const lib = join(import.meta.dir, "../helpers/libc.ts");
    const r = spawnSync(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", process.execPath, "-e", `import { listxattr } from ${JSON.stringify(lib)}; console.log(JSON.stringify(listxattr(${JSON.stringify(f)})))`], { stdout: "pipe", stderr: "pipe" });
    expect(r.stderr.toString()).toBe("");
    expect(JSON.parse(r.stdout.toString())).toEqual(["user.u"]);
  });

  test(`${label}: FIFOs`, async () => {
    const d = fresh();
    const p = join(d, "fifo");
    expect(spawnSync(["mkfifo", p]).exitCode).toBe(0);
    expect(fs.statSync(p).isFIFO()).toBe(true);
    const w = Bun.spawn(["sh", "-c", `echo through-the-pipe > ${p}`]);
    const r = spawnSync(["cat", p]);
    await w.exited;
    expect(r.stdout.toString()).toBe("through-the-pipe\n");
  });

  test(`${label}: an unlinked file stays readable and writable through an open descriptor, keeps the times set through it, and opens again through /proc`, () => {
    const d = fresh();
    const f = join(d, "u");
    fs.writeFileSync(f, "still here");
    const fd = fs.openSync(f, "r+");
    fs.unlinkSync(f);
    expect(fs.existsSync(f)).toBe(false);
    const b = Buffer.alloc(10);
    fs.readSync(fd, b, 0, 10, 0);
    expect(b.toString()).toBe("still here");
    fs.writeSync(fd, "X", 0);
    expect(fs.fstatSync(fd).size).toBe(10);
    expect(fs.fstatSync(fd).nlink).toBe(0);
    // Its times, set through the descriptor, are what fstat shows.
    fs.futimesSync(fd, 1_000_000, 1_000_000);
    expect(fs.fstatSync(fd).mtimeMs).toBe(1_000_000_000);
    // Opened again through /proc (how a deleted file is recovered), while a new file has its old name.
    fs.writeFileSync(f, "another file");
    const again = fs.openSync(`/proc/self/fd/${fd}`, "r");
    try {
      expect(fs.readFileSync(again, "utf8")).toBe("Xtill here");
    } finally {
      fs.closeSync(again);
    }
    fs.unlinkSync(f);
    fs.closeSync(fd);
    expect(fs.readdirSync(d)).toEqual([]);
  });

  // With its directory gone too, the file has no path at all: calls on the descriptor still reach it.
  test(`${label}: ftruncate, fchmod and futimes reach an unlinked open file whose directory is gone`, () => {
    const d = join(fresh(), "gone");
    fs.mkdirSync(d);
    const fd = fs.openSync(join(d, "f"), "w+");
    try {
      fs.writeSync(fd, "hello");
      fs.unlinkSync(join(d, "f"));
      fs.rmdirSync(d);
      fs.ftruncateSync(fd, 3);
      fs.fchmodSync(fd, 0o600);
      fs.futimesSync(fd, 5, 5);
      const st = fs.fstatSync(fd);
      expect([st.size, st.mode & 0o777, st.mtimeMs]).toEqual([3, 0o600, 5000]);
      const b = Buffer.alloc(8);
      expect(b.toString("utf8", 0, fs.readSync(fd, b, 0, 8, 0))).toBe("hel");
    } finally {
      fs.closeSync(fd);
    }
  });

  test(`${label}: a directory read again from its start (rewinddir) lists what is there now`, () => {
    const d = fresh();
    fs.writeFileSync(join(d, "f1"), "");
    const fd = fs.openSync(d, "r");
    try {
      expect(readDirFd(fd).filter((x) => !x.startsWith(".")).sort()).toEqual(["f1"]);
      fs.writeFileSync(join(d, "f2"), "");
      fs.unlinkSync(join(d, "f1"));
      rewindFd(fd);
      expect(readDirFd(fd).filter((x) => !x.startsWith(".")).sort()).toEqual(["f2"]);
      fs.writeFileSync(join(d, "f3"), "");
      rewindFd(fd);
      expect(readDirFd(fd).filter((x) => !x.startsWith(".")).sort()).toEqual(["f2", "f3"]);
    } finally {
      fs.closeSync(fd);
    }
  });

  // A shell whose working directory another process removed, or a program holding a directory fd.
  test(`${label}: an open directory that was removed still answers fstat, fchmod and futimes`, () => {
    const d = join(fresh(), "gone");
    fs.mkdirSync(d, 0o755);
    const fd = fs.openSync(d, "r");
    try {
      fs.rmdirSync(d);
      expect(fs.fstatSync(fd).nlink).toBe(0);
      fs.fchmodSync(fd, 0o700);
      fs.futimesSync(fd, 7, 7);
      const st = fs.fstatSync(fd);
      expect([st.isDirectory(), st.nlink, st.mode & 0o777, st.mtimeMs]).toEqual([true, 0, 0o700, 7000]);
      expect(() => readDirFd(fd)).toThrow(`errno ${E.ENOENT}`);
      expect(errCode(() => fs.mkdirSync(join(`/proc/self/fd/${fd}`, "x")))).toBe("ENOENT");
    } finally {
      fs.closeSync(fd);
    }
  });

  test(`${label}: a successful ftruncate updates ctime, a refused one does not`, async () => {
    const d = fresh();
    const f = join(d, "t");
    fs.writeFileSync(f, "");
    const before = fs.statSync(f, { bigint: true }).ctimeNs;
    // Until the filesystem's clock has moved past it (kernels stamp times at a coarse tick).
    await waitFor("the clock to tick", () => {
      fs.writeFileSync(join(d, "tick"), "");
      return fs.statSync(join(d, "tick"), { bigint: true }).ctimeNs > before;
    });
    const fd = fs.openSync(f, "r+");
    fs.ftruncateSync(fd, 123);
    fs.closeSync(fd);
    const after = fs.statSync(f, { bigint: true }).ctimeNs;
    expect(after > before).toBe(true);
    const ro = fs.openSync(f, "r");
    expect(errCode(() => fs.ftruncateSync(ro, 5))).toBe("EINVAL");
    fs.closeSync(ro);
    expect(fs.statSync(f, { bigint: true }).ctimeNs).toBe(after);
  });

  test(`${label}: an ftruncate right after a create stamps a ctime after the create's`, () => {
    // The disk's clock is the kernel's coarse one, a tick behind the one a record's times come from:
    // the cut must still read as the later change, through the descriptor and after the close.
    const d = fresh();
    for (let i = 0; i < 20; i++) {
      const f = join(d, `t${i}`);
      fs.writeFileSync(f, "x");
      const before = fs.statSync(f, { bigint: true }).ctimeNs;
      const fd = fs.openSync(f, "r+");
      fs.ftruncateSync(fd, 0);
      const through = fs.fstatSync(fd, { bigint: true }).ctimeNs;
      fs.closeSync(fd);
      const after = fs.statSync(f, { bigint: true }).ctimeNs;
      expect([i, through > before, after >= through]).toEqual([i, true, true]);
    }
  });

  test(`${label}: statfs`, () => {
    const s = fs.statfsSync(dir());
    expect(s.blocks).toBeGreaterThan(0);
    expect(s.bsize).toBeGreaterThan(0);
  });

  test(`${label}: permissions for a non-root user`, () => {
    const d = fresh();
    fs.chmodSync(d, 0o755);
    const secret = join(d, "secret");
    fs.writeFileSync(secret, "root only");
    fs.chmodSync(secret, 0o600);
    let [rc, err] = asNobody(`cat ${secret}`);
    expect(rc).not.toBe(0);
    expect(err).toContain("Permission denied");
    [rc, err] = asNobody(`touch ${join(d, "new")}`);
    expect(rc).not.toBe(0);
    expect(err).toContain("Permission denied");
    [rc, err] = asNobody(`rm -f ${secret}`);
    expect(rc).not.toBe(0);
    expect(err).toContain("Permission denied");
    const open = join(d, "open");
    fs.mkdirSync(open, 0o777);
    fs.chmodSync(open, 0o777);
    [rc, err] = asNobody(`echo mine > ${join(open, "mine")} && chmod 600 ${join(open, "mine")} && cat ${join(open, "mine")}`);
    expect(err.trim()).toBe("mine");
    expect(rc).toBe(0);
    const st = fs.statSync(join(open, "mine"));
    expect(st.uid).toBe(65534);
    expect(st.gid).toBe(65534);
    [rc, err] = asNobody(`chown 0 ${join(open, "mine")}`);
    expect(rc).not.toBe(0);
    // sticky, setgid directory: new entries take the directory's group
    const g = join(d, "sgid");
    fs.mkdirSync(g);
    fs.chownSync(g, 0, 4321);
    fs.chmodSync(g, 0o2777);
    fs.writeFileSync(join(g, "f"), "");
    fs.mkdirSync(join(g, "sub"));
    expect(fs.statSync(join(g, "f")).gid).toBe(4321);
    expect(fs.statSync(join(g, "sub")).gid).toBe(4321);
    expect(fs.statSync(join(g, "sub")).mode & 0o2000).toBe(0o2000);
  });

  test(`${label}: a write, a truncate or an O_TRUNC open by a user without CAP_FSETID, and a chown, clear setuid and setgid (of a group-executable file)`, () => {
    const d = fresh();
    fs.chmodSync(d, 0o777);
    const mode = (f: string) => fs.statSync(f).mode & 0o7777;
    const file = (name: string, m: number) => {
      const f = join(d, name);
      fs.writeFileSync(f, "0123456789");
      fs.chmodSync(f, m);
      // Its attributes cached, as by any ls: what a write changes must not be answered from there.
      expect(fs.statSync(f).mode & 0o7777).toBe(m);
      return f;
    };
    const cases: [string, (f: string) => string][] = [
      ["write", (f) => `printf x >> ${f}`],
      ["truncate", (f) => `truncate -s 4 ${f}`],
      ["trunc-open", (f) => `: > ${f}`],
    ];
    for (const [what, cmd] of cases) {
      const both = file(`${what}-both`, 0o6777);
      const uid = file(`${what}-uid`, 0o4776);
      for (const f of [both, uid]) expect(asNobody(cmd(f))[0]).toBe(0);
      expect([what, mode(both), mode(uid)]).toEqual([what, 0o777, 0o776]);
    }
    // Written again after that: nothing left to take, the write goes on.
    const twice = file("twice", 0o6777);
    expect(asNobody(`printf x >> ${twice} && printf y >> ${twice}`)[0]).toBe(0);
    expect([mode(twice), fs.readFileSync(twice, "utf8")]).toEqual([0o777, "0123456789xy"]);
    // Given them while its writer has it open: that writer's next write takes them.
    const late = file("late", 0o666);
    fs.chownSync(late, 65534, 65534);
    expect(asNobody(`exec 3>>${late}; chmod 6777 ${late} && printf x >&3`)).toEqual([0, ""]);
    expect(mode(late)).toBe(0o777);
    // fallocate changes the file as a write does (room made, a hole punched): it takes them too.
    const room = file("fallocate", 0o6777);
    expect(asNobody(`fallocate -l 65536 ${room} && fallocate -p -o 0 -l 4096 ${room}`)).toEqual([0, ""]);
    expect(mode(room)).toBe(0o777);
    // Setgid without group execute goes too when the writer is not in the file's group.
    const outside = file("outside", 0o2767);
    expect(asNobody(`printf x >> ${outside}`)[0]).toBe(0);
    expect(mode(outside)).toBe(0o767);
    // The owner writing as root (CAP_FSETID) keeps them.
    const mine = file("root-write", 0o6777);
    fs.appendFileSync(mine, "x");
    expect(mode(mine)).toBe(0o6777);
    // A chown clears them, root's too; setgid without group execute (a mandatory-lock mark, not a privilege) stays.
    const given = file("chown", 0o6777);
    const lockGiven = file("chown-lock", 0o2766);
    fs.chownSync(given, 65534, 65534);
    fs.chownSync(lockGiven, 65534, 65534);
    expect([mode(given), mode(lockGiven)]).toEqual([0o777, 0o2766]);
    // Root (CAP_FSETID) keeps setgid without group execute through a chown, even outside the file's group.
    const rootKeeps = file("chown-root", 0o2767);
    fs.chownSync(rootKeeps, 0, 4242);
    fs.chmodSync(rootKeeps, 0o2767);
    fs.chownSync(rootKeeps, -1, -1);
    expect(mode(rootKeeps)).toBe(0o2767);
  });

  test(`${label}: readdir lists many entries exactly once`, () => {
    const d = fresh();
    const names = new Set<string>();
    for (let i = 0; i < 3000; i++) {
      const nm = `entry-${i}-${"x".repeat(i % 40)}`;
      names.add(nm);
      fs.writeFileSync(join(d, nm), "");
    }
    const listed = fs.readdirSync(d);
    expect(listed.length).toBe(names.size);
    expect(new Set(listed)).toEqual(names);
  });
}
