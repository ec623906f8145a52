import { afterAll, afterEach, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawn, spawnSync } from "bun";
import { errCode, fuseUnavailable, MCFS, tempDir, waitFor } from "./helpers/env.ts";
import { forceUnmount, isMounted, startDaemon, privateRedisPid, type TestDaemon } from "./helpers/daemon.ts";
import { startRedis } from "./helpers/redis.ts";
import { getxattr } from "./helpers/libc.ts";
import { FUSE_CONF, userAllowOther } from "../src/fuse/fusermount.ts";

// The daemon runs as nobody, as an HPC user runs it: /dev/fuse usable by everyone, the setuid fusermount3.
const NOBODY = 65534;
const skip = fuseUnavailable() ?? (Bun.which("setpriv") && Bun.which("fusermount3") ? undefined : "setpriv or fusermount3 is missing");

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});

// /dev/fuse is opened to every user for these tests only; its mode is put back whatever happens.
let fuseMode: number | undefined;
beforeAll(() => {
  if (skip) return;
  fuseMode = fs.statSync("/dev/fuse").mode & 0o7777;
  fs.chmodSync("/dev/fuse", 0o666);
});
afterAll(() => {
  if (fuseMode !== undefined) fs.chmodSync("/dev/fuse", fuseMode);
});

/** A temp dir with a root path and a mount point that belong to nobody. */
function place(tag: string): { base: string; root: string; mnt: string } {
  const t = tempDir(tag);
  cleanups.push(() => t.remove());
  const root = join(t.path, "n-root"), mnt = join(t.path, "n-mnt");
  for (const d of [root, mnt]) {
    fs.mkdirSync(d);
    fs.chmodSync(d, 0o755);
    fs.chownSync(d, NOBODY, NOBODY);
  }
  return { base: t.path, root, mnt };
}

async function asNobody(base: string, args: string[] = [], redisUrl?: string): Promise<TestDaemon> {
  const d = await startDaemon({ base, name: "n", uid: NOBODY, args, redisUrl });
  cleanups.push(async () => {
    await d.kill().catch(() => {});
    forceUnmount(d.mnt);
  });
  return d;
}

/** Run a shell command as nobody; its exit code and output. */
function shAsNobody(cmd: string): { code: number; out: string } {
  const r = spawnSync(["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "sh", "-c", cmd], { stdout: "pipe", stderr: "pipe" });
  return { code: r.exitCode ?? -1, out: r.stdout.toString() + r.stderr.toString() };
}

/** Start a daemon as nobody that is expected to refuse: its exit code and output. */
async function refusedStart(p: { root: string; mnt: string }, args: string[]): Promise<{ code: number; out: string }> {
  const proc = spawn(["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", MCFS, "daemon", "-f", p.mnt, "-r", p.root, ...args], { stdout: "pipe", stderr: "pipe" });
  cleanups.push(async () => {
    proc.kill("SIGKILL");
    await proc.exited;
    forceUnmount(p.mnt);
  });
  const [out, err, code] = await Promise.all([new Response(proc.stdout).text(), new Response(proc.stderr).text(), proc.exited]);
  return { code, out: out + err };
}

/** Whether process pid has ended (a zombie has). */
function gone(pid: number): boolean {
  try {
    return fs.readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.startsWith("Z") ?? true;
  } catch {
    return true;
  }
}

const mountOptions = (mnt: string) => fs.readFileSync("/proc/self/mountinfo", "utf8").split("\n").find((l) => l.split(" ")[4] === mnt) ?? "";

describe.skipIf(!!skip)("run by a user other than root (nobody)", () => {
  test("mounts without allow_other where fuse.conf does not permit it (and says so), serves files, and SIGTERM unmounts", async () => {
    if (userAllowOther()) return console.warn(`${FUSE_CONF} permits user_allow_other here: the case without it is not tested`);
    const p = place("unpriv");
    const d = await asNobody(p.base);
    expect(d.log()).toContain("mounting without allow_other");
    expect(mountOptions(d.mnt)).toContain("user_id=65534");
    expect(mountOptions(d.mnt)).not.toContain("allow_other");
    expect(shAsNobody(`echo hello > ${d.mnt}/f.txt && mkdir ${d.mnt}/dir && cat ${d.mnt}/f.txt`)).toEqual({ code: 0, out: "hello\n" });
    // Without allow_other the mount is the owner's alone, root included.
    expect(errCode(() => fs.readdirSync(d.mnt))).toBe("EACCES");
    expect(fs.readFileSync(join(d.root, "f.txt"), "utf8")).toBe("hello\n");
    // Marking the kept file needs CAP_SYS_ADMIN (trusted.*): skipped without a failure.
    expect(getxattr(join(d.root, "f.txt"), "trusted.mcfs.id")).toBeNumber();
    d.proc.kill("SIGTERM");
    expect(await d.proc.exited).toBe(0);
    expect(isMounted(d.mnt)).toBe(false);
    expect(d.log()).toContain("stopped and unmounted");
    // Its private redis-server (run as nobody too) stopped with it.
    expect(fs.existsSync(join(d.root, ".mcfs/redis/redis.sock"))).toBe(false);
  });

  test("SIGTERM unmounts also while a process of the user has a file open and its cwd in the mount", async () => {
    const p = place("unpriv-busy");
    const d = await asNobody(p.base);
    expect(shAsNobody(`echo open > ${d.mnt}/o.txt`).code).toBe(0);
    const holder = spawn(["setpriv", `--reuid=${NOBODY}`, `--regid=${NOBODY}`, "--clear-groups", "sh", "-c", `cd ${d.mnt} && exec 3< o.txt && exec sleep 600`], { stdout: "ignore", stderr: "ignore" });
    cleanups.push(async () => {
      holder.kill("SIGKILL");
      await holder.exited;
    });
    await waitFor("the holder to open o.txt", () => {
      try {
        return fs.readlinkSync(`/proc/${holder.pid}/fd/3`) === join(d.mnt, "o.txt");
      } catch {
        return false;
      }
    });
    d.proc.kill("SIGTERM");
    expect(await d.proc.exited).toBe(0);
    expect(isMounted(d.mnt)).toBe(false);
    expect(d.log()).toContain("stopped and unmounted");
  });

  test("in a cluster (-u): its cache dir and the cluster secret are the user's own", async () => {
    const p = place("unpriv-cluster");
    const r = await startRedis();
    cleanups.push(() => r.stop());
    // A Redis every user may reach (the test's own, on a unix socket).
    fs.chmodSync(r.url.slice("unix://".length), 0o777);
    fs.writeFileSync(join(p.base, "cluster-secret"), "test-cluster-secret-0123456789\n", { mode: 0o600 });
    fs.chownSync(join(p.base, "cluster-secret"), NOBODY, NOBODY);
    fs.mkdirSync(join(p.base, "n-cache"), { mode: 0o700 });
    fs.chownSync(join(p.base, "n-cache"), NOBODY, NOBODY);
    const d = await asNobody(p.base, [], r.url);
    expect(shAsNobody(`echo clustered > ${d.mnt}/c.txt && cat ${d.mnt}/c.txt`)).toEqual({ code: 0, out: "clustered\n" });
    expect(fs.readdirSync(join(p.base, "n-cache"))).toHaveLength(1);
    d.proc.kill("SIGTERM");
    expect(await d.proc.exited).toBe(0);
    expect(isMounted(d.mnt)).toBe(false);
  });

  test("an explicit --allow-other that fuse.conf does not permit is refused, naming the file, before anything is mounted", async () => {
    if (userAllowOther()) return console.warn(`${FUSE_CONF} permits user_allow_other here: the refusal is not tested`);
    const p = place("unpriv-ao");
    const r = await refusedStart(p, ["--allow-other"]);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain("--allow-other");
    expect(r.out).toContain(`${FUSE_CONF} has no user_allow_other line`);
    expect(isMounted(p.mnt)).toBe(false);
    expect(fs.existsSync(join(p.root, ".mcfs/redis"))).toBe(false);
    // Refused before the root path was touched (it is closed to other users at start).
    expect(fs.statSync(p.root).mode & 0o777).toBe(0o755);
  });

  test("with user_allow_other in fuse.conf the mount has allow_other", async () => {
    const saved = fs.readFileSync(FUSE_CONF);
    try {
      if (!userAllowOther()) fs.writeFileSync(FUSE_CONF, Buffer.concat([saved, Buffer.from("\nuser_allow_other\n")]));
      const p = place("unpriv-conf");
      const d = await asNobody(p.base);
      expect(d.log()).not.toContain("mounting without allow_other");
      expect(mountOptions(d.mnt)).toContain("allow_other");
      expect(shAsNobody(`echo shared > ${d.mnt}/s.txt`).code).toBe(0);
      expect(fs.readFileSync(join(d.mnt, "s.txt"), "utf8")).toBe("shared\n");
      d.proc.kill("SIGTERM");
      expect(await d.proc.exited).toBe(0);
      expect(isMounted(d.mnt)).toBe(false);
    } finally {
      fs.writeFileSync(FUSE_CONF, saved);
    }
  });

  test("a dead mount left by a killed daemon of the same user is cleared at the next start", async () => {
    const p = place("unpriv-dead");
    const a = await asNobody(p.base);
    expect(shAsNobody(`echo kept > ${a.mnt}/k.txt`).code).toBe(0);
    await a.kill();
    expect(isMounted(a.mnt)).toBe(true);
    // (Asked as nobody: without allow_other the kernel answers root's statfs itself, never the daemon.)
    expect(shAsNobody(`stat -f ${a.mnt}`).out).toContain("Transport endpoint is not connected");
    // The killed daemon's private redis-server dies with it (pdeathsig) before the next one starts.
    const redisPid = privateRedisPid(a);
    await waitFor(`the killed daemon's redis-server (pid ${redisPid}) to end`, () => gone(redisPid));
    const b = await asNobody(p.base);
    expect(shAsNobody(`cat ${b.mnt}/k.txt`)).toEqual({ code: 0, out: "kept\n" });
    b.proc.kill("SIGTERM");
    expect(await b.proc.exited).toBe(0);
    expect(isMounted(b.mnt)).toBe(false);
  });

  test("a mount point with something in it is refused, naming it; --nonempty mounts over it", async () => {
    const p = place("unpriv-nonempty");
    fs.writeFileSync(join(p.mnt, "hidden.txt"), "underneath\n");
    const r = await refusedStart(p, []);
    expect(r.code).not.toBe(0);
    expect(r.out).toContain(`mount point ${p.mnt} is not empty`);
    expect(r.out).toContain("--nonempty");
    expect(isMounted(p.mnt)).toBe(false);
    const d = await asNobody(p.base, ["--nonempty"]);
    expect(shAsNobody(`ls -A ${d.mnt}`)).toEqual({ code: 0, out: "" });
    d.proc.kill("SIGTERM");
    expect(await d.proc.exited).toBe(0);
    expect(isMounted(d.mnt)).toBe(false);
    expect(fs.readFileSync(join(p.mnt, "hidden.txt"), "utf8")).toBe("underneath\n");
  });
});
