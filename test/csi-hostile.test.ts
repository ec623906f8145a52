import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { spawnSync } from "bun";
import * as fs from "node:fs";
import { join, relative } from "node:path";
import { errCode, fuseUnavailable, tempDir } from "./helpers/env.ts";
import { startRedis, type TestRedis } from "./helpers/redis.ts";
import { daemonPid, freePort, startCsi, stopNodeDaemon, type CallResult, type CsiProcess } from "./helpers/csi.ts";

const skip = fuseUnavailable() ?? (Bun.which("unshare") && Bun.which("nsenter") ? undefined : "unshare/nsenter (util-linux) are not installed");

const MOUNT = { mount: { fs_type: "", mount_flags: [] }, access_mode: { mode: "MULTI_NODE_MULTI_WRITER" } };
const NOEXEC = { mount: { fs_type: "", mount_flags: ["noexec"] }, access_mode: { mode: "MULTI_NODE_MULTI_WRITER" } };

interface Mount {
  id: number;
  root: string;
  mountPoint: string;
  options: string[];
  fstype: string;
}

function parse(text: string): Mount[] {
  return text.split("\n").filter(Boolean).map((l) => {
    const [pre, post] = l.split(" - ");
    const f = pre!.split(" ");
    const oct = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
    return { id: Number(f[0]), root: oct(f[3]!), mountPoint: oct(f[4]!), options: f[5]!.split(","), fstype: post!.split(" ")[0]! };
  });
}

function expectStatus(r: CallResult, status: string, ...mentions: string[]) {
  expect({ status: r.status, message: r.message }).toMatchObject({ status });
  for (const m of mentions) expect(r.message).toContain(m);
}

/**
 * The node plugin runs in a private mount namespace (`unshare -m --propagation private`) with the node
 * daemon it starts: whatever it mounts, also where it must not, stays there and dies with it. The test
 * looks into that namespace through /proc/<pid>/root and /proc/<pid>/mountinfo.
 */
describe.skipIf(!!skip)("CSI node: hostile targets, foreign mounts, mount flags", () => {
  let t: ReturnType<typeof tempDir>;
  let redis: TestRedis;
  let ctrl: CsiProcess;
  let node: CsiProcess;
  let pods: string, outside: string, root: string, mnt: string;
  let vol: string, other: string;

  const pid = () => node.proc.pid;
  /** A path as the plugin sees it. */
  const inNs = (p: string) => `/proc/${pid()}/root${p}`;
  const mounts = () => parse(fs.readFileSync(`/proc/${pid()}/mountinfo`, "utf8"));
  const at = (p: string) => mounts().filter((m) => m.mountPoint === p);
  const bindsOf = (id: string) => mounts().filter((m) => m.fstype === "fuse.mcfs" && m.root === `/volumes/${id}`);
  const hostMountsUnder = (dir: string) => parse(fs.readFileSync("/proc/self/mountinfo", "utf8")).filter((m) => m.mountPoint.startsWith(dir));
  const nsenter = (...cmd: string[]) => {
    const r = spawnSync(["nsenter", "-t", String(pid()), "-m", "--", ...cmd], { stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")}: ${r.stderr.toString()}`);
  };
  /** A pod's target as kubelet hands it over: its parent exists, the target itself not yet. */
  const podTarget = (pod: string) => {
    const parent = join(pods, pod, "volumes/kubernetes.io~csi/pv");
    fs.mkdirSync(parent, { recursive: true });
    return join(parent, "mount");
  };
  const N = (m: string, r: object) => node.client.call("Node", m, r);
  const publish = (id: string, target: string, extra: object = {}) => N("NodePublishVolume", { volume_id: id, target_path: target, volume_capability: MOUNT, ...extra });
  const unpublish = (id: string, target: string) => N("NodeUnpublishVolume", { volume_id: id, target_path: target });

  /** The plugin in a new private mount namespace, or (restarted) in the one its node daemon still runs in. */
  async function startNode(): Promise<CsiProcess> {
    const daemon = daemonPid(root);
    const wrap = daemon === undefined ? ["unshare", "-m", "--propagation", "private"] : ["nsenter", "-t", String(daemon), "-m", "--"];
    const args = ["--redis-url", redis.url, "--node-url", `127.0.0.1:${await freePort()}`, "--root-dir", root, "--mount-point", mnt, "--pods-dir", pods, "--cluster-secret-file", join(t.path, "secret"), "--check-interval", "0.2"];
    return startCsi("csi-node", t.path, "n1", args, { MULTICLOUD_FS_DISK_CACHE: join(t.path, "n1-cache") }, wrap);
  }

  beforeAll(async () => {
    t = tempDir("csi-hostile");
    fs.writeFileSync(join(t.path, "secret"), "csi-hostile-cluster-secret-0123456789\n", { mode: 0o600 });
    pods = join(t.path, "pods");
    outside = join(t.path, "outside");
    root = join(t.path, "n1-root");
    mnt = join(t.path, "n1-mnt");
    fs.mkdirSync(pods);
    fs.mkdirSync(outside);
    fs.writeFileSync(join(outside, "sentinel"), "not the volume");
    redis = await startRedis();
    ctrl = await startCsi("csi-controller", t.path, "controller", ["--redis-url", redis.url], { SKIP_NODE_MOUNT: "true" });
    node = await startNode();
    const create = async (name: string) => (await ctrl.client.call("Controller", "CreateVolume", { name, volume_capabilities: [MOUNT] })).reply.volume.volume_id as string;
    vol = await create("pvc-hostile");
    other = await create("pvc-other");
    fs.writeFileSync(inNs(`${mnt}/volumes/${vol}/data.txt`), "volume data");
  });

  afterAll(async () => {
    // The namespace, and every mount in it, goes away with its last process: the plugin and its node daemon.
    await node?.stop();
    if (root) await stopNodeDaemon(root, mnt);
    await ctrl?.stop();
    await redis?.stop();
    t?.remove();
  });

  test("hostile targets are refused with InvalidArgument, also on retry, and mount nothing anywhere", async () => {
    const sym = podTarget("pod-symlink");
    fs.symlinkSync(outside, sym);
    const elsewhere = join(t.path, "elsewhere");
    fs.mkdirSync(elsewhere);
    const cases: [string, string][] = [
      ["a symlink to a directory outside", sym],
      ["relative", relative("/", podTarget("pod-relative"))],
      ["with ..", `${pods}/pod-dots/../../outside`],
      ["with .", `${join(pods, "pod-dot")}/./mount`],
      ["with a trailing /", `${podTarget("pod-slash")}/`],
      ["with //", podTarget("pod-double").replace(`${pods}/`, `${pods}//`)],
      ["with a NUL", `${podTarget("pod-nul")}\0x`],
      ["under /proc", "/proc/tty"],
      ["under /sys", "/sys/kernel/mm"],
      ["outside the pods dir", elsewhere],
      ["the pods dir itself", pods],
    ];
    // Every case, each tried twice (kubelet retries): refused, and no bind of the volume anywhere.
    const seen = [];
    for (const [why, target] of cases) {
      const before = bindsOf(vol).length;
      const rs = [await publish(vol, target), await publish(vol, target)];
      seen.push({ why, status: rs.map((r) => r.status), namesField: rs.every((r) => r.message.includes("target_path")), newMounts: bindsOf(vol).length - before });
    }
    expect(seen).toEqual(cases.map(([why]) => ({ why, status: ["INVALID_ARGUMENT", "INVALID_ARGUMENT"], namesField: true, newMounts: 0 })));
    expect(bindsOf(vol)).toEqual([]);
    expect(fs.readdirSync(inNs(outside))).toEqual(["sentinel"]);
    expect(fs.readlinkSync(sym)).toBe(outside);
  });

  test("a volume directory that is a symlink in the filesystem is not followed; the failed publish leaves nothing", async () => {
    // Any user of the filesystem can store a symlink where a volume's directory would be.
    fs.symlinkSync(outside, inNs(`${mnt}/volumes/pvc-evil`));
    const target = podTarget("pod-evil");
    expectStatus(await publish("pvc-evil", target), "FAILED_PRECONDITION", "pvc-evil");
    expect(at(target)).toEqual([]);
    expect(fs.existsSync(inNs(target))).toBe(false);
    fs.rmSync(inNs(`${mnt}/volumes/pvc-evil`));
  });

  test("publish creates the target, retries leave exactly one mount, unpublish removes what it made", async () => {
    const target = podTarget("pod-retry");
    for (let i = 0; i < 3; i++) expect((await publish(vol, target)).status).toBe("OK");
    expect(at(target)).toHaveLength(1);
    expect(bindsOf(vol).map((m) => m.mountPoint)).toEqual([target]);
    expect(fs.readFileSync(inNs(`${target}/data.txt`), "utf8")).toBe("volume data");
    for (let i = 0; i < 2; i++) expect((await unpublish(vol, target)).status).toBe("OK");
    expect(at(target)).toEqual([]);
    expect(fs.existsSync(inNs(target))).toBe(false);
    // The pod's directory kubelet made stays: it is kubelet's to remove.
    expect(fs.existsSync(inNs(join(target, "..")))).toBe(true);
  });

  test("every bind is nosuid,nodev (read-only too), noexec when asked: a device node in the volume does not open", async () => {
    // Made as root through the node mount (the read-write path); opening it needs a mount without nodev.
    const made = spawnSync(["mknod", inNs(`${mnt}/volumes/${vol}/null`), "c", "1", "3"], { stderr: "pipe" });
    expect(made.stderr.toString()).toBe("");
    const rw = podTarget("pod-rw"), ro = podTarget("pod-ro"), nx = podTarget("pod-noexec");
    expect((await publish(vol, rw)).status).toBe("OK");
    expect((await publish(vol, ro, { readonly: true })).status).toBe("OK");
    expect((await publish(vol, nx, { volume_capability: NOEXEC })).status).toBe("OK");
    const opts = (p: string) => at(p)[0]?.options ?? [];
    expect(opts(rw)).toEqual(expect.arrayContaining(["rw", "nosuid", "nodev"]));
    expect(opts(rw)).not.toContain("noexec");
    expect(opts(ro)).toEqual(expect.arrayContaining(["ro", "nosuid", "nodev"]));
    expect(opts(nx)).toEqual(expect.arrayContaining(["rw", "nosuid", "nodev", "noexec"]));
    for (const p of [rw, ro, nx]) expect({ p, err: errCode(() => fs.closeSync(fs.openSync(inNs(`${p}/null`), "r"))) }).toEqual({ p, err: "EACCES" });
    expect(fs.readFileSync(inNs(`${ro}/data.txt`), "utf8")).toBe("volume data");
    expect(errCode(() => fs.writeFileSync(inNs(`${ro}/new.txt`), "x"))).toBe("EROFS");
    // A flag the driver cannot honour is refused, not silently dropped.
    const bad = { mount: { fs_type: "", mount_flags: ["suid"] }, access_mode: { mode: "MULTI_NODE_MULTI_WRITER" } };
    expectStatus(await publish(vol, podTarget("pod-suid"), { volume_capability: bad }), "INVALID_ARGUMENT", "mount_flags", "suid");
    for (const p of [rw, ro, nx]) expect((await unpublish(vol, p)).status).toBe("OK");
    expect(bindsOf(vol)).toEqual([]);
    fs.rmSync(inNs(`${mnt}/volumes/${vol}/null`));
  });

  test("unpublish refuses a tmpfs at the target and leaves it mounted", async () => {
    const tmpfs = podTarget("pod-tmpfs");
    fs.mkdirSync(tmpfs);
    nsenter("mount", "-t", "tmpfs", "foreign", tmpfs);
    try {
      expectStatus(await unpublish(vol, tmpfs), "FAILED_PRECONDITION", "tmpfs");
      expect(at(tmpfs).map((m) => m.fstype)).toEqual(["tmpfs"]);
    } finally {
      while (at(tmpfs).length) nsenter("umount", tmpfs);
    }
  });

  test("unpublish refuses another volume's bind, named with the wrong volume id or through a symlink", async () => {
    const theirs = podTarget("pod-other");
    expect((await publish(other, theirs)).status).toBe("OK");
    expectStatus(await unpublish(vol, theirs), "FAILED_PRECONDITION", other);
    expect(bindsOf(other).map((m) => m.mountPoint)).toEqual([theirs]);
    const link = podTarget("pod-link");
    fs.symlinkSync(theirs, link);
    expectStatus(await unpublish(other, link), "INVALID_ARGUMENT", "target_path", "symlink");
    expect(bindsOf(other).map((m) => m.mountPoint)).toEqual([theirs]);
    expect((await unpublish(other, theirs)).status).toBe("OK");
    expect(bindsOf(other)).toEqual([]);
    expect(fs.existsSync(inNs(theirs))).toBe(false);
  });

  test("unpublish leaves a directory it did not make, empty or not, and answers OK every time", async () => {
    const empty = podTarget("pod-empty");
    fs.mkdirSync(empty);
    const full = podTarget("pod-full");
    fs.mkdirSync(full);
    fs.writeFileSync(join(full, "keep.txt"), "keep");
    const statuses = [];
    for (let i = 0; i < 2; i++) statuses.push((await unpublish(vol, empty)).status, (await unpublish(vol, full)).status);
    expect({ statuses, emptyStays: fs.existsSync(inNs(empty)), fullStays: fs.existsSync(inNs(join(full, "keep.txt"))) }).toEqual({ statuses: ["OK", "OK", "OK", "OK"], emptyStays: true, fullStays: true });
    // Published onto a directory kubelet made: unpublish unmounts it and leaves the directory.
    expect((await publish(vol, empty)).status).toBe("OK");
    expect((await unpublish(vol, empty)).status).toBe("OK");
    expect(at(empty)).toEqual([]);
    expect(fs.existsSync(inNs(empty))).toBe(true);
    // Nothing there at all.
    expect((await unpublish(vol, podTarget("pod-never"))).status).toBe("OK");
  });

  test("a restarted plugin adds nosuid,nodev to a pod's bind that lacks them", async () => {
    // A read-only bind as the driver made it before: the remount to read-only dropped nosuid,nodev.
    const old = podTarget("pod-old");
    fs.mkdirSync(old);
    nsenter("mount", "--bind", `${mnt}/volumes/${vol}`, old);
    nsenter("mount", "-o", "remount,bind,ro,suid,dev", old);
    expect(at(old)[0]!.options).not.toContain("nodev");
    await node.stop();
    node = await startNode();
    expect(at(old)[0]!.options).toEqual(expect.arrayContaining(["ro", "nosuid", "nodev"]));
    expect(fs.readFileSync(inNs(`${old}/data.txt`), "utf8")).toBe("volume data");
    expect((await unpublish(vol, old)).status).toBe("OK");
    expect(at(old)).toEqual([]);
  });

  test("nothing the plugin mounted is visible outside its namespace", () => {
    expect(hostMountsUnder(t.path)).toEqual([]);
  });
});
