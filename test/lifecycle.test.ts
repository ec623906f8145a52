import { afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawn, spawnSync } from "bun";
import { errCode, freePort, fuseUnavailable, MCFS, tempDir, waitFor } from "./helpers/env.ts";
import { startRedis, type TestRedis } from "./helpers/redis.ts";
import { forceUnmount, isMounted, startDaemon, privateRedisPid, type TestDaemon } from "./helpers/daemon.ts";
import { closeFd, getxattr, setxattr } from "./helpers/libc.ts";
import { E } from "../src/util/errno.ts";
import { findMount } from "../src/fuse/mountpoint.ts";

const skip = fuseUnavailable();

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

async function daemon(spec: Parameters<typeof startDaemon>[0]): Promise<TestDaemon> {
  const d = await startDaemon(spec);
  cleanups.push(() => d.stop());
  return d;
}
async function redis(): Promise<TestRedis> {
  const r = await startRedis();
  cleanups.push(() => r.stop());
  return r;
}
/** A tmpfs mounted at dir for this test, unmounted after it. */
function tmpfs(dir: string, options: string): void {
  fs.mkdirSync(dir, { recursive: true });
  expect(spawnSync(["mount", "-t", "tmpfs", "-o", options, "tmpfs", dir]).exitCode).toBe(0);
  cleanups.push(() => spawnSync(["umount", "-l", dir]));
}

function temp(tag: string): string {
  const t = tempDir(tag);
  cleanups.push(() => t.remove());
  return t.path;
}

/** 1 MiB blocks written to a new file at path, up to mib of them: the code of the call that failed (the open or a write), and whether the file was made. */
function fill(path: string, mib: number): { code: string | undefined; made: boolean } {
  const block = Buffer.alloc(1 << 20, 7);
  let fd: number | undefined;
  try {
    fd = fs.openSync(path, "w");
    for (let i = 0; i < mib; i++) fs.writeSync(fd, block);
    return { code: undefined, made: true };
  } catch (e) {
    return { code: (e as NodeJS.ErrnoException).code, made: fd !== undefined };
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

function populate(mnt: string) {
  fs.mkdirSync(join(mnt, "dir/sub"), { recursive: true });
  fs.writeFileSync(join(mnt, "dir/sub/file.txt"), "content\n");
  fs.chmodSync(join(mnt, "dir/sub/file.txt"), 0o640);
  fs.chownSync(join(mnt, "dir/sub/file.txt"), 1000, 1001);
  fs.symlinkSync("sub/file.txt", join(mnt, "dir/link"));
  fs.linkSync(join(mnt, "dir/sub/file.txt"), join(mnt, "dir/hard"));
  expect(setxattr(join(mnt, "dir/sub/file.txt"), "user.k", Buffer.from("v"))).toBe(0);
  expect(spawnSync(["mkfifo", join(mnt, "dir/fifo")]).exitCode).toBe(0);
}

function verify(mnt: string) {
  expect(fs.readFileSync(join(mnt, "dir/sub/file.txt"), "utf8")).toBe("content\n");
  const st = fs.statSync(join(mnt, "dir/sub/file.txt"));
  expect(st.mode & 0o7777).toBe(0o640);
  expect([st.uid, st.gid, st.nlink]).toEqual([1000, 1001, 2]);
  expect(fs.readlinkSync(join(mnt, "dir/link"))).toBe("sub/file.txt");
  expect(fs.statSync(join(mnt, "dir/hard")).ino).toBe(st.ino);
  expect(Buffer.from(getxattr(join(mnt, "dir/sub/file.txt"), "user.k") as Uint8Array).toString()).toBe("v");
  expect(fs.statSync(join(mnt, "dir/fifo")).isFIFO()).toBe(true);
  expect(fs.readdirSync(join(mnt, "dir")).sort()).toEqual(["fifo", "hard", "link", "sub"]);
}

describe.skipIf(!!skip)("daemon life cycle", () => {
  test("stop and start again on the same root and Redis: everything is still there", async () => {
    const base = temp("restart");
    const r = await redis();
    const a = await startDaemon({ base, name: "n1", redisUrl: r.url });
    populate(a.mnt);
    const ino = fs.statSync(join(a.mnt, "dir/sub/file.txt")).ino;
    expect(await a.stop()).toBe(0);
    expect(isMounted(a.mnt)).toBe(false);
    const b = await daemon({ base, name: "n1", redisUrl: r.url });
    verify(b.mnt);
    expect(fs.statSync(join(b.mnt, "dir/sub/file.txt")).ino).toBe(ino);
  });

  test("with no -u: a private redis-server keeps the namespace across restarts and stops with the daemon", async () => {
    const base = temp("embedded");
    const a = await startDaemon({ base, name: "solo" });
    expect(a.log()).toContain("private redis-server");
    const redisPid = Number(/"pid":(\d+)/.exec(a.log())![1]);
    populate(a.mnt);
    expect(await a.stop()).toBe(0);
    expect(() => process.kill(redisPid, 0)).toThrow();
    const b = await daemon({ base, name: "solo" });
    verify(b.mnt);
    // mcfs's own state is not part of the namespace
    expect(fs.readdirSync(b.mnt)).toEqual(["dir"]);
  });

  test("with no -u: a record behind its local file (a lost deferred write) is repaired at start", async () => {
    const base = temp("repair");
    const a = await startDaemon({ base, name: "r" });
    fs.writeFileSync(join(a.mnt, "grow"), "short");
    expect(await a.stop()).toBe(0);
    // What a crash between a reply and its deferred metadata write leaves: bytes newer than the record.
    fs.appendFileSync(join(a.root, "grow"), " and then longer");
    const b = await daemon({ base, name: "r" });
    expect(b.log()).toContain('"repaired":1');
    expect(fs.statSync(join(b.mnt, "grow")).size).toBe(21);
    expect(fs.readFileSync(join(b.mnt, "grow"), "utf8")).toBe("short and then longer");
  });

  test("after a crash (SIGKILL) the stale mount is recovered at start and the data is there", async () => {
    const base = temp("crash");
    const a = await startDaemon({ base, name: "c" });
    populate(a.mnt);
    const redisPid = Number(/"pid":(\d+)/.exec(a.log())![1]);
    await a.kill();
    await waitFor("private redis to die with its daemon", () => {
      try {
        process.kill(redisPid, 0);
        return false;
      } catch {
        return true;
      }
    });
    expect(isMounted(a.mnt)).toBe(true);
    expect(errCode(() => fs.statSync(a.mnt))).toBe("ENOTCONN");
    const b = await daemon({ base, name: "c" });
    verify(b.mnt);
  });

  test("stop unmounts within seconds while a file is open and a shell sits in the mount", async () => {
    const base = temp("busy");
    const r = await redis();
    const a = await startDaemon({ base, name: "b", redisUrl: r.url });
    fs.writeFileSync(join(a.mnt, "held"), "x");
    const holder = spawn(["sh", "-c", "exec 3<held; echo ready; exec sleep 600"], { cwd: a.mnt, stdout: "pipe" });
    cleanups.push(() => holder.kill("SIGKILL"));
    const reader = holder.stdout.getReader();
    await reader.read();
    const t0 = Date.now();
    expect(await a.stop()).toBe(0);
    expect(Date.now() - t0).toBeLessThan(10_000);
    expect(isMounted(a.mnt)).toBe(false);
  });

  test("files already in the root path are published at start", async () => {
    const base = temp("scan");
    const r = await redis();
    const root = join(base, "pre-root");
    fs.mkdirSync(join(root, "x/y"), { recursive: true });
    for (let i = 0; i < 50; i++) fs.writeFileSync(join(root, "x/y", `f${i}`), `data ${i}`);
    fs.symlinkSync("x/y/f1", join(root, "ln"));
    const a = await daemon({ base, name: "s", redisUrl: r.url, root });
    expect(fs.readdirSync(join(a.mnt, "x/y")).length).toBe(50);
    expect(fs.readFileSync(join(a.mnt, "x/y/f7"), "utf8")).toBe("data 7");
    expect(fs.readFileSync(join(a.mnt, "ln"), "utf8")).toBe("data 1");
  });

  test("killed during its start-up scan, a node starts again and publishes what changed in its root while it was away; a file swapped for a symlink or a FIFO there is not followed", async () => {
    const base = temp("scankill");
    const r = await redis();
    const a = await daemon({ base, name: "k", redisUrl: r.url });
    const N = 10_000;
    fs.mkdirSync(join(a.mnt, "many"));
    for (let i = 0; i < N; i++) fs.writeFileSync(join(a.mnt, "many", `f${i}`), `file ${i}`);
    for (const [name, data] of [["same", "aaaa"], ["grown", "short"], ["to-link", "kept"], ["to-fifo", "kept"]]) fs.writeFileSync(join(a.mnt, name!), data!);
    await a.stop();
    // While the node is away, its root's files change under it.
    fs.writeFileSync(join(a.root, "same"), "bbbb");
    const later = new Date(Date.now() + 60_000);
    fs.utimesSync(join(a.root, "same"), later, later);
    fs.appendFileSync(join(a.root, "grown"), " and then longer");
    fs.rmSync(join(a.root, "to-link"));
    fs.symlinkSync("/etc/passwd", join(a.root, "to-link"));
    fs.rmSync(join(a.root, "to-fifo"));
    expect(spawnSync(["mkfifo", join(a.root, "to-fifo")]).exitCode).toBe(0);
    // Started again, and killed while its scan has one of the root's files open.
    const log = join(base, "killed.log");
    fs.writeFileSync(log, "");
    const p = spawn([MCFS, "daemon", "-f", a.mnt, "-r", a.root, "-p", String(await freePort()), "-i", "127.0.0.1", "-u", r.url, "--cluster-secret-file", join(base, "cluster-secret")], {
      stdout: Bun.file(log), stderr: Bun.file(log), env: { ...process.env, MULTICLOUD_FS_DISK_CACHE: join(base, "k-cache") },
    });
    cleanups.push(async () => {
      if (p.exitCode === null) p.kill("SIGKILL");
      await p.exited;
      forceUnmount(a.mnt);
    });
    const scanning = () => fs.readdirSync(`/proc/${p.pid}/fd`).some((fd) => {
      try {
        return fs.readlinkSync(`/proc/${p.pid}/fd/${fd}`).startsWith(join(a.root, "many") + "/");
      } catch {
        return false;
      }
    });
    // Looked at without a pause: the scan holds each file open for microseconds and is over in half
    // a second, so polls 10 ms apart sometimes missed every one of them (1 CI run in about 15).
    for (const end = Date.now() + 20_000; !scanning(); ) {
      if (p.exitCode !== null || isMounted(a.mnt)) throw new Error(`the daemon got past its scan before it was caught in it:\n${fs.readFileSync(log, "utf8")}`);
      if (Date.now() > end) throw new Error("timed out waiting for the start-up scan to have a file of many/ open");
    }
    p.kill("SIGKILL");
    await p.exited;
    forceUnmount(a.mnt);
    const b = await daemon({ base, name: "k", redisUrl: r.url });
    expect(fs.readdirSync(join(b.mnt, "many")).length).toBe(N);
    for (const i of [0, 4321, N - 1]) expect(fs.readFileSync(join(b.mnt, "many", `f${i}`), "utf8")).toBe(`file ${i}`);
    // Another node reads what the restarted one published again.
    const c = await daemon({ base, name: "k2", redisUrl: r.url });
    for (const d of [b, c]) {
      expect(fs.readFileSync(join(d.mnt, "same"), "utf8")).toBe("bbbb");
      expect(fs.readFileSync(join(d.mnt, "grown"), "utf8")).toBe("short and then longer");
      expect(errCode(() => fs.readFileSync(join(d.mnt, "to-link")))).toBe("EIO");
      expect(errCode(() => fs.readFileSync(join(d.mnt, "to-fifo")))).toBe("EIO");
    }
  });

  test("a second daemon on the same root is refused", async () => {
    const base = temp("twice");
    const r = await redis();
    const a = await daemon({ base, name: "t", redisUrl: r.url });
    const p = spawnSync([MCFS, "daemon", "-f", join(base, "other-mnt"), "-r", a.root, "-u", r.url, "-p", "1", "--insecure"], { stderr: "pipe" });
    expect(p.exitCode).toBe(1);
    expect(p.stderr.toString()).toContain("another mcfs daemon");
    expect(isMounted(join(base, "other-mnt"))).toBe(false);
  });

  test("Redis going away: operations fail with EIO instead of hanging, and stop still works", async () => {
    const base = temp("redisdown");
    const r = await startRedis();
    const a = await startDaemon({ base, name: "rd", redisUrl: r.url, args: ["--attr-timeout", "0", "--entry-timeout", "0"] });
    cleanups.push(() => a.stop());
    fs.writeFileSync(join(a.mnt, "f"), "x");
    await r.stop();
    expect(errCode(() => fs.statSync(join(a.mnt, "f")))).toBe("EIO");
    expect(await a.stop()).toBe(0);
    expect(isMounted(a.mnt)).toBe(false);
  });
});

describe.skipIf(!!skip)("signals", () => {
  // A SIGTERM while the daemon starts (it may have mounted already) must still end in a clean
  // unmount and exit 0, never the default action that leaves a dead mount.
  test("SIGTERM during start: the daemon finishes starting, unmounts and exits 0", async () => {
    const base = temp("sigstart");
    const mnt = join(base, "mnt"), log = join(base, "log");
    fs.writeFileSync(log, "");
    const p = spawn([MCFS, "daemon", "-f", mnt, "-r", join(base, "root")], { stdout: Bun.file(log), stderr: Bun.file(log) });
    cleanups.push(async () => {
      if (p.exitCode === null) p.kill("SIGKILL");
      await p.exited;
      forceUnmount(mnt);
    });
    await waitFor("the daemon's first log line", () => fs.readFileSync(log, "utf8").length > 0);
    p.kill("SIGTERM");
    expect(await p.exited).toBe(0);
    expect(isMounted(mnt)).toBe(false);
  });

  // A stop first waits (up to a second) for the kernel to hand over its last closes, mounted still.
  test("a second signal while the stop waits on a request: the daemon exits at once (130) and leaves no mount behind", async () => {
    const d = await startDaemon({ base: temp("sigtwice"), name: "n" });
    const redisPid = privateRedisPid(d);
    expect(redisPid).toBeGreaterThan(0);
    let mk: ReturnType<typeof spawn> | undefined;
    cleanups.push(async () => {
      mk?.kill("SIGKILL");
      if (errCode(() => process.kill(redisPid, "SIGCONT")) === undefined) process.kill(redisPid, "SIGKILL");
      await d.kill();
      forceUnmount(d.mnt);
    });
    // A mkdir waits on the store, which waits on a stopped Redis: the kernel has a request unanswered.
    process.kill(redisPid, "SIGSTOP");
    mk = spawn(["mkdir", join(d.mnt, "stuck")], { stderr: "ignore" });
    const conn = findMount(d.mnt)!.minor;
    await waitFor("the mkdir to wait in the daemon", () => Number(fs.readFileSync(`/sys/fs/fuse/connections/${conn}/waiting`, "utf8")) > 0);
    d.proc.kill("SIGTERM");
    await waitFor("the stop to begin", () => d.log().includes('"msg":"stopping"'));
    d.proc.kill("SIGTERM");
    expect(await d.proc.exited).toBe(130);
    expect(isMounted(d.mnt)).toBe(false);
  });
});

describe.skipIf(!!skip)("running conditions", () => {
  test("starts where $TMPDIR is mounted noexec (the shim is loaded from memory), and with -s", async () => {
    const base = temp("noexec");
    const tmp = join(base, "noexec-tmp");
    tmpfs(tmp, "noexec,size=16m");
    const saved = process.env.TMPDIR;
    process.env.TMPDIR = tmp;
    try {
      const a = await daemon({ base, name: "nx", args: ["-s"] });
      fs.writeFileSync(join(a.mnt, "f"), "single-threaded");
      expect(fs.readFileSync(join(a.mnt, "f"), "utf8")).toBe("single-threaded");
    } finally {
      if (saved === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = saved;
    }
  });
});

describe.skipIf(!!skip)("runtime settings", () => {
  const environ = (pid: number) => fs.readFileSync(`/proc/${pid}/environ`, "utf8").split("\0");
  test("the daemon keeps freed memory (pages, and holes in pages in use) a second before giving it back and runs without JavaScriptCore's FTL tier (it runs itself again, under the PID and name it was started with); a setting of the user's is kept", async () => {
    const base = temp("alloc");
    const a = await daemon({ base, name: "al" });
    expect(environ(a.proc.pid)).toContain("MIMALLOC_PURGE_DELAY=1000");
    expect(environ(a.proc.pid)).toContain("MIMALLOC_PURGE_HOLES_MIN_INTERVAL=1000");
    expect(environ(a.proc.pid)).toContain("BUN_JSC_useFTLJIT=false");
    expect(environ(a.proc.pid)).toContain("BUN_JSC_useWarmUpMarkedBlocks=false");
    // In force: no thread of the warm-up.
    const threads = fs.readdirSync(`/proc/${a.proc.pid}/task`).map((t) => fs.readFileSync(`/proc/${a.proc.pid}/task/${t}/comm`, "utf8").trim());
    expect(threads).not.toContain("JSCWarmUp");
    expect(fs.readFileSync(`/proc/${a.proc.pid}/comm`, "utf8").trim()).toBe("mcfs");
    expect(fs.readFileSync(`/proc/${a.proc.pid}/cmdline`, "utf8").split("\0")).toContain("daemon");
    const saved = process.env.MIMALLOC_PURGE_DELAY;
    process.env.MIMALLOC_PURGE_DELAY = "50";
    try {
      const b = await daemon({ base, name: "al2" });
      expect(environ(b.proc.pid)).toContain("MIMALLOC_PURGE_DELAY=50");
      // The one the user left unset is still set.
      expect(environ(b.proc.pid)).toContain("BUN_JSC_useFTLJIT=false");
    } finally {
      if (saved === undefined) delete process.env.MIMALLOC_PURGE_DELAY;
      else process.env.MIMALLOC_PURGE_DELAY = saved;
    }
    // The environment goes over byte for byte (a secret or a path of any bytes).
    process.env.MCFS_TEST_BYTES = "é✓";
    try {
      const c = await daemon({ base, name: "al3" });
      expect(environ(c.proc.pid)).toContain("MIMALLOC_PURGE_DELAY=1000");
      expect(fs.readFileSync(`/proc/${c.proc.pid}/environ`).includes(Buffer.from("\0MCFS_TEST_BYTES=é✓\0"))).toBe(true);
    } finally {
      delete process.env.MCFS_TEST_BYTES;
    }
  });
});

describe.skipIf(!!skip)("full disk", () => {
  test("a full root path gives ENOSPC, keeps what was written, and the mount keeps working", async () => {
    const base = temp("full");
    const root = join(base, "small-root");
    tmpfs(root, "size=4m");
    const r = await redis();
    const a = await daemon({ base, name: "full", redisUrl: r.url, root });
    fs.writeFileSync(join(a.mnt, "kept"), "written before the disk filled");
    expect(fill(join(a.mnt, "filler"), 16).code).toBe("ENOSPC");
    expect(fs.readFileSync(join(a.mnt, "kept"), "utf8")).toBe("written before the disk filled");
    fs.unlinkSync(join(a.mnt, "filler"));
    fs.writeFileSync(join(a.mnt, "after"), "room again");
    expect(fs.readFileSync(join(a.mnt, "after"), "utf8")).toBe("room again");
  });

  test("a sole node's private Redis on the full disk: changes made meanwhile give ENOSPC or succeed, never EIO, and removing a file makes room again", async () => {
    const base = temp("full-sole");
    const root = join(base, "small-root");
    tmpfs(root, "size=24m");
    const a = await daemon({ base, name: "fullsole", root });
    fs.writeFileSync(join(a.mnt, "kept"), "written before the disk filled");
    expect(fill(join(a.mnt, "filler"), 32)).toEqual({ code: "ENOSPC", made: true });
    // Enough metadata changes that Redis's appends meet the full disk; then the room given back to
    // Redis is fought over by more writes, and more changes follow.
    const errors = new Map<string, number>();
    const note = (c: string | undefined) => c && errors.set(c, (errors.get(c) ?? 0) + 1);
    const made: string[] = [];
    const changes = (round: string) => {
      for (let i = 0; i < 100; i++) {
        note(errCode(() => fs.mkdirSync(join(a.mnt, `d${round}${i}`))));
        const e = errCode(() => fs.writeFileSync(join(a.mnt, `t${round}${i}`), ""));
        if (!e) made.push(`t${round}${i}`);
        note(e);
        note(errCode(() => fs.chmodSync(join(a.mnt, "kept"), 0o600 + (i % 2) * 0o40)));
        // Kept in Redis alone: big values fill its room fastest (one a file: each file has 64 KiB of them).
        const x = setxattr(join(a.mnt, e ? "kept" : `t${round}${i}`), "user.x", Buffer.alloc(65000, i));
        note(x === 0 ? undefined : x === 28 ? "ENOSPC" : `errno ${x}`);
      }
    };
    changes("a");
    // Refused at its create already if the changes took Redis's room down to what is kept for removals.
    const filler2 = fill(join(a.mnt, "filler2"), 32);
    expect(filler2.code).toBe("ENOSPC");
    changes("b");
    expect([...errors.keys()].filter((c) => c !== "ENOSPC")).toEqual([]);
    // Every create that succeeded is in the namespace, not only on the disk.
    const listed = new Set(fs.readdirSync(a.mnt));
    expect(made.filter((n) => !listed.has(n))).toEqual([]);
    if (filler2.made) fs.unlinkSync(join(a.mnt, "filler2"));
    fs.unlinkSync(join(a.mnt, "filler"));
    fs.writeFileSync(join(a.mnt, "after"), "room again");
    expect(fs.readFileSync(join(a.mnt, "after"), "utf8")).toBe("room again");
    expect(fs.readFileSync(join(a.mnt, "kept"), "utf8")).toBe("written before the disk filled");
    expect(a.log()).not.toContain("reported as EIO");
    // What the mount answered is what Redis kept: the same after a restart.
    const before = fs.readdirSync(a.mnt).sort();
    const stopped = await a.stop();
    if (stopped !== 0) console.log(a.log().split("\n").slice(-30).join("\n"));
    expect(stopped).toBe(0);
    const b = await daemon({ base, name: "fullsole", root });
    expect(fs.readdirSync(b.mnt).sort()).toEqual(before);
    expect(fs.existsSync(join(b.mnt, "filler"))).toBe(false);
    expect(fs.readFileSync(join(b.mnt, "after"), "utf8")).toBe("room again");
    // The room is kept again at that start; then the disk fills from outside the mount (another
    // program: here a file beside Redis's), a few changes are made, and the node restarts.
    expect(fs.statSync(join(root, ".mcfs/redis/space-reserve")).size).toBe(8 << 20);
    expect(fill(join(root, ".mcfs/hog"), 32).code).toBe("ENOSPC");
    // Until Redis has failed an append (the last page of its file may hold a few more).
    const appendFailed = () => spawnSync(["redis-cli", "-s", join(root, ".mcfs/redis/redis.sock"), "info", "persistence"]).stdout.toString().includes("aof_last_write_status:err");
    for (let i = 0; i < 2000 && !appendFailed(); i++) expect(["ok", "ENOSPC"]).toContain(errCode(() => fs.mkdirSync(join(b.mnt, `e${i}`))) ?? "ok");
    expect(await b.stop()).toBe(0);
    const c = await daemon({ base, name: "fullsole", root });
    fs.mkdirSync(join(c.mnt, "made-on-a-full-disk"));
    expect(fs.readFileSync(join(c.mnt, "after"), "utf8")).toBe("room again");
  });
});

describe.skipIf(!!skip)("a change Redis refuses", () => {
  test("chmod, chown, utime and truncate refused by Redis leave the file on this node's disk as it was: a restart does not bring them back", async () => {
    const base = temp("refused");
    const r = await redis();
    const a = await daemon({ base, name: "refused", redisUrl: r.url });
    const f = join(a.mnt, "f");
    fs.writeFileSync(f, "kept as it was");
    fs.chmodSync(f, 0o640);
    fs.utimesSync(f, 1000, 1000);
    // Every write refused (there is no replica), reads still served.
    expect(await r.cli("config", "set", "min-replicas-to-write", "1")).toBe("OK");
    expect(errCode(() => fs.utimesSync(f, 2000, 2000))).toBe("EIO");
    expect(errCode(() => fs.chmodSync(f, 0o600))).toBe("EIO");
    expect(errCode(() => fs.chownSync(f, 1234, 1234))).toBe("EIO");
    // A cut refused: not one byte gone from the disk, by path or by an open that truncates.
    expect(errCode(() => fs.truncateSync(f, 4))).toBe("EIO");
    expect(errCode(() => fs.writeFileSync(f, "new"))).toBe("EIO");
    const disk = fs.statSync(join(a.root, "f"));
    expect(fs.readFileSync(join(a.root, "f"), "utf8")).toBe("kept as it was");
    expect({ mtime: disk.mtimeMs, mode: disk.mode & 0o7777, uid: disk.uid }).toEqual({ mtime: 1_000_000, mode: 0o640, uid: 0 });
    expect(await r.cli("config", "set", "min-replicas-to-write", "0")).toBe("OK");
    expect(await a.stop()).toBe(0);
    const b = await daemon({ base, name: "refused", redisUrl: r.url });
    const st = fs.statSync(join(b.mnt, "f"));
    expect({ mtime: st.mtimeMs, mode: st.mode & 0o7777, uid: st.uid }).toEqual({ mtime: 1_000_000, mode: 0o640, uid: 0 });
    expect(fs.readFileSync(join(b.mnt, "f"), "utf8")).toBe("kept as it was");
  });
});

describe.skipIf(!!skip)("Redis out of memory", () => {
  test("reads of what is there go on, a create's close and a mkdir fail ENOSPC leaving no name, and with room again everything works", async () => {
    const base = temp("redis-oom");
    const r = await redis();
    const a = await daemon({ base, name: "oom", redisUrl: r.url });
    const body = (i: number) => `file ${i} `.repeat(100 + i);
    for (let i = 0; i < 5; i++) fs.writeFileSync(join(a.mnt, `f${i}`), body(i));
    // Every write refused for want of memory (noeviction), as a full Redis does.
    expect(await r.cli("config", "set", "maxmemory-policy", "noeviction")).toBe("OK");
    expect(await r.cli("config", "set", "maxmemory", "1")).toBe("OK");
    // A first read's open asks Redis to note that this node watches the file: refused, it is answered unwatched.
    for (let i = 0; i < 5; i++) expect(fs.readFileSync(join(a.mnt, `f${i}`), "utf8")).toBe(body(i));
    // Its create is written behind: the close says what the store answered.
    const fd = fs.openSync(join(a.mnt, "new"), "w");
    fs.writeSync(fd, "x");
    expect(closeFd(fd)).toBe(E.ENOSPC);
    // Nor does the kernel keep the name the shim gave it at the create.
    expect(errCode(() => fs.statSync(join(a.mnt, "new")))).toBe("ENOENT");
    expect(fs.readdirSync(a.mnt)).not.toContain("new");
    expect(errCode(() => fs.mkdirSync(join(a.mnt, "dir")))).toBe("ENOSPC");
    expect(a.log()).not.toContain("reported as EIO");
    expect(await r.cli("config", "set", "maxmemory", "0")).toBe("OK");
    fs.writeFileSync(join(a.mnt, "new"), "made");
    fs.mkdirSync(join(a.mnt, "dir"));
    expect(fs.readFileSync(join(a.mnt, "new"), "utf8")).toBe("made");
    for (let i = 0; i < 5; i++) expect(fs.readFileSync(join(a.mnt, `f${i}`), "utf8")).toBe(body(i));
  });

  test("nodes go on beating while Redis is full: none is taken for gone, and each reads what the other holds", async () => {
    const base = temp("redis-oom-beats");
    const r = await redis();
    const a = await daemon({ base, name: "a", redisUrl: r.url });
    const b = await daemon({ base, name: "b", redisUrl: r.url });
    for (let i = 0; i < 3; i++) fs.writeFileSync(join(a.mnt, `held-${i}`), `held ${i} `.repeat(50));
    const beats = (await r.cli("keys", "mcfs:hb:*")).split("\n").filter(Boolean);
    expect(beats.length).toBe(2);
    expect(await r.cli("config", "set", "maxmemory-policy", "noeviction")).toBe("OK");
    expect(await r.cli("config", "set", "maxmemory", "1")).toBe("OK");
    // Each heartbeat gives its key its time to live (15 s) again: two rises each, well past the
    // point where a refused heartbeat would have let the key expire.
    const last = new Map<string, number>(), rises = new Map<string, number>();
    await waitFor("both nodes' heartbeats kept while Redis is full", async () => {
      for (const k of beats) {
        const ttl = Number(await r.cli("pttl", k));
        if (ttl > (last.get(k) ?? Infinity)) rises.set(k, (rises.get(k) ?? 0) + 1);
        last.set(k, ttl);
      }
      return beats.every((k) => (rises.get(k) ?? 0) >= 3);
    }, 40_000);
    for (let i = 0; i < 3; i++) expect(fs.readFileSync(join(b.mnt, `held-${i}`), "utf8")).toBe(`held ${i} `.repeat(50));
    expect(await r.cli("config", "set", "maxmemory", "0")).toBe("OK");
  }, 60_000);
});

describe.skipIf(!!skip)("command line", () => {
  const run = (...args: string[]) => spawnSync([MCFS, ...args], { stderr: "pipe", stdout: "pipe" });

  test("--help explains every flag", () => {
    const p = run("daemon", "--help");
    expect(p.exitCode).toBe(0);
    const out = p.stdout.toString();
    for (const f of ["--mount_path", "--root_path", "--port", "--redis_url", "--host_ip", "--debug", "--single", "MULTICLOUD_FS_DISK_CACHE"]) expect(out).toContain(f);
  });

  test("a bad flag is named", () => {
    const p = run("daemon", "-f", "/tmp/x", "-r", "/tmp/y", "--bogus-flag");
    expect(p.exitCode).toBe(2);
    expect(p.stderr.toString()).toContain("bogus-flag");
    const q = run("daemon", "-f", "/tmp/x", "-r", "/tmp/y", "-p", "99999");
    expect(q.exitCode).toBe(2);
    expect(q.stderr.toString()).toContain("--port");
    const m = run("daemon", "-r", "/tmp/y");
    expect(m.exitCode).toBe(2);
    expect(m.stderr.toString()).toContain("mount_path");
  });

  test("an unreachable Redis is named, without its password", () => {
    const base = temp("noredis");
    const p = spawnSync([MCFS, "daemon", "-f", join(base, "m"), "-r", join(base, "r"), "-u", "redis://user:s3cret@127.0.0.1:1", "--insecure"], { stderr: "pipe", stdout: "pipe" });
    expect(p.exitCode).toBe(1);
    const err = p.stderr.toString();
    expect(err).toContain("127.0.0.1:1");
    expect(err).not.toContain("s3cret");
    expect(isMounted(join(base, "m"))).toBe(false);
    forceUnmount(join(base, "m"));
  });
});

describe.skipIf(!!skip)("large directories", () => {
  test("100,000 files placed in the root are published at start and listed, each exactly once", async () => {
    const base = temp("large");
    const r = await redis();
    // On a tmpfs: this VM's ext4 takes 20-40 s only to make the files, and its scan twice as long.
    const root = join(base, "big-root");
    tmpfs(root, "size=512m");
    fs.mkdirSync(join(root, "big"));
    const N = 100_000;
    for (let i = 0; i < N; i++) fs.closeSync(fs.openSync(join(root, "big", `file-${i}`), "w"));
    // The mount comes once the scan has published them all: 7-14 s here, more on a slower machine.
    const a = await daemon({ base, name: "l", redisUrl: r.url, root, mountWithinMs: 180_000 });
    const names = fs.readdirSync(join(a.mnt, "big"));
    expect(names.length).toBe(N);
    expect(new Set(names).size).toBe(N);
    expect(names.includes("file-99999")).toBe(true);
    const ls = spawnSync(["ls", "-l", join(a.mnt, "big")], { stdout: "pipe" });
    expect(ls.exitCode).toBe(0);
    expect(ls.stdout.toString().trim().split("\n").length).toBe(N + 1);
  });
});
