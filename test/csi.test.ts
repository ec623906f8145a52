import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { fuseUnavailable, tempDir, waitFor, errCode } from "./helpers/env.ts";
import { startRedis, type TestRedis } from "./helpers/redis.ts";
import { isMounted } from "./helpers/daemon.ts";
import { daemonPid, freePort, mountsIn, podTarget, startCsi, stopNodeDaemon, type CallResult, type CsiProcess } from "./helpers/csi.ts";

const skip = fuseUnavailable();

const MOUNT_RWX = { mount: { fs_type: "", mount_flags: [] }, access_mode: { mode: "MULTI_NODE_MULTI_WRITER" } };
const MOUNT_RWO = { mount: {}, access_mode: { mode: "SINGLE_NODE_WRITER" } };
const BLOCK = { block: {}, access_mode: { mode: "SINGLE_NODE_WRITER" } };
const GiB = 1 << 30;

function expectStatus(r: CallResult, status: string, mentions?: string) {
  expect({ status: r.status, message: r.message }).toMatchObject({ status });
  if (mentions) expect(r.message).toContain(mentions);
  // Errors name what was wrong; they never carry a stack trace.
  expect(r.message).not.toMatch(/\n\s+at /);
}

/**
 * A controller and two node plugins (each starting its node daemon) on one Redis, as kubelet and the
 * sidecars call them. Each node plugin runs in its own private mount namespace (as its container would):
 * its mounts never reach the host; the test looks at them through /proc/<pid>/root and /proc/<pid>/mountinfo.
 */
describe.skipIf(!!skip)("CSI driver", () => {
  let t: ReturnType<typeof tempDir>;
  let redis: TestRedis;
  let ctrl: CsiProcess;
  const nodes: Record<string, CsiProcess> = {};
  const dirs = (n: string) => ({ root: join(t.path, `${n}-root`), mnt: join(t.path, `${n}-mnt`) });
  const pods = () => join(t.path, "kubelet-pods");
  const target = (n: string, pod: string) => podTarget(pods(), n, pod);
  /** The pid whose mount namespace node n's mounts live in: its plugin, or while that is down its node daemon. */
  const nsPid = (n: string) => {
    const p = nodes[n]?.proc;
    return p && p.exitCode === null && p.signalCode === null ? p.pid : daemonPid(dirs(n).root)!;
  };
  /** A path as node n's plugin (and so its pods) see it. */
  const on = (n: string, p: string) => `/proc/${nsPid(n)}/root${p}`;
  const mountsAt = (n: string, p: string) => mountsIn(nsPid(n), p);

  /** Start node n's plugin: in a new private mount namespace, or in its node daemon's when that still runs. */
  async function startNode(n: string, env: Record<string, string> = {}): Promise<CsiProcess> {
    const port = await freePort();
    const { root, mnt } = dirs(n);
    const daemon = daemonPid(root);
    const wrap = daemon === undefined ? ["unshare", "-m", "--propagation", "private"] : ["nsenter", "-t", String(daemon), "-m", "--"];
    return startCsi("csi-node", t.path, n, ["--redis-url", redis.url, "--node-url", `127.0.0.1:${port}`, "--root-dir", root, "--mount-point", mnt, "--pods-dir", pods(), "--cluster-secret-file", join(t.path, "secret"), "--check-interval", "0.2"], {
      MULTICLOUD_FS_DISK_CACHE: join(t.path, `${n}-cache`),
      ...env,
    }, wrap);
  }

  const C = (m: string, r?: object) => ctrl.client.call("Controller", m, r);
  const N = (n: string, m: string, r?: object) => nodes[n]!.client.call("Node", m, r);

  beforeAll(async () => {
    t = tempDir("csi");
    fs.writeFileSync(join(t.path, "secret"), "csi-test-cluster-secret-0123456789\n", { mode: 0o600 });
    redis = await startRedis();
    ctrl = await startCsi("csi-controller", t.path, "controller", ["--redis-url", redis.url], { SKIP_NODE_MOUNT: "true" });
    nodes.n1 = await startNode("n1");
    nodes.n2 = await startNode("n2");
  });

  afterAll(async () => {
    await ctrl?.stop();
    for (const [n, p] of Object.entries(nodes)) {
      await p.stop();
      await stopNodeDaemon(dirs(n).root, dirs(n).mnt);
    }
    await redis?.stop();
    t?.remove();
  });

  test("identity: driver name, version, capabilities, ready", async () => {
    for (const p of [ctrl, nodes.n1!]) {
      const info = await p.client.call("Identity", "GetPluginInfo");
      expect(info.reply).toMatchObject({ name: "csi.multicloud.fs", vendor_version: expect.stringMatching(/^\d+\.\d+\.\d+/) });
      const caps = await p.client.call("Identity", "GetPluginCapabilities");
      expect(JSON.stringify(caps.reply)).toContain("CONTROLLER_SERVICE");
      expect((await p.client.call("Identity", "Probe")).reply.ready.value).toBe(true);
    }
    const cc = await C("ControllerGetCapabilities");
    for (const c of ["CREATE_DELETE_VOLUME", "PUBLISH_UNPUBLISH_VOLUME", "LIST_VOLUMES", "GET_CAPACITY", "EXPAND_VOLUME"]) expect(JSON.stringify(cc.reply)).toContain(c);
    const nc = await N("n1", "NodeGetCapabilities");
    expect(JSON.stringify(nc.reply)).toContain("GET_VOLUME_STATS");
    expect((await N("n2", "NodeGetInfo")).reply.node_id).toBe("n2");
  });

  test("life cycle: create, publish on two nodes, write in one pod, read in the other, unpublish, delete", async () => {
    const created = await C("CreateVolume", { name: "pvc-life", capacity_range: { required_bytes: GiB }, volume_capabilities: [MOUNT_RWX] });
    expect(created.status).toBe("OK");
    const id: string = created.reply.volume.volume_id;
    expect(created.reply.volume.capacity_bytes).toBe(GiB);
    for (const n of ["n1", "n2"]) expect((await C("ControllerPublishVolume", { volume_id: id, node_id: n, volume_capability: MOUNT_RWX })).status).toBe("OK");
    const t1 = target("n1", "pod-a"), t2 = target("n2", "pod-b");
    expect((await N("n1", "NodePublishVolume", { volume_id: id, target_path: t1, volume_capability: MOUNT_RWX })).status).toBe("OK");
    expect((await N("n2", "NodePublishVolume", { volume_id: id, target_path: t2, volume_capability: MOUNT_RWX })).status).toBe("OK");
    expect([mountsAt("n1", t1), mountsAt("n2", t2)]).toEqual([1, 1]);
    expect(isMounted(t1) || isMounted(t2)).toBe(false);
    const data = Buffer.from("written by pod a on n1\n".repeat(1000));
    fs.mkdirSync(on("n1", join(t1, "out")));
    fs.writeFileSync(on("n1", join(t1, "out/result.txt")), data);
    expect(fs.readFileSync(on("n2", join(t2, "out/result.txt"))).equals(data)).toBe(true);
    // The pod sees its volume only, not the filesystem's root.
    expect(fs.readdirSync(on("n2", t2))).toEqual(["out"]);
    const stats = await N("n1", "NodeGetVolumeStats", { volume_id: id, volume_path: t1 });
    expect(stats.reply.usage.find((u: { unit: string }) => u.unit === "BYTES").total).toBeGreaterThan(0);
    const listed = await C("ListVolumes", {});
    const entry = listed.reply.entries.find((e: { volume: { volume_id: string } }) => e.volume.volume_id === id);
    expect(entry.status.published_node_ids.sort()).toEqual(["n1", "n2"]);
    for (const [n, p] of [["n1", t1], ["n2", t2]] as const) {
      expect((await N(n, "NodeUnpublishVolume", { volume_id: id, target_path: p })).status).toBe("OK");
      expect(mountsAt(n, p)).toBe(0);
      expect(fs.existsSync(on(n, p))).toBe(false);
      expect((await C("ControllerUnpublishVolume", { volume_id: id, node_id: n })).status).toBe("OK");
    }
    expect((await C("DeleteVolume", { volume_id: id })).status).toBe("OK");
    // Gone for every node: from the namespace and from the disk of the node that held the bytes.
    await waitFor("the volume gone from n2's mount", () => !fs.existsSync(on("n2", join(dirs("n2").mnt, "volumes", id))));
    await waitFor("n1's disk to drop the volume's bytes", () => !fs.existsSync(join(dirs("n1").root, "volumes", id, "out/result.txt")));
    expect((await C("ListVolumes", {})).reply.entries.some((e: { volume: { volume_id: string } }) => e.volume.volume_id === id)).toBe(false);
  });

  test("every call is idempotent", async () => {
    const a = await C("CreateVolume", { name: "pvc-idem", capacity_range: { required_bytes: GiB }, volume_capabilities: [MOUNT_RWX] });
    const b = await C("CreateVolume", { name: "pvc-idem", capacity_range: { required_bytes: GiB }, volume_capabilities: [MOUNT_RWX] });
    expect(b.reply.volume.volume_id).toBe(a.reply.volume.volume_id);
    expectStatus(await C("CreateVolume", { name: "pvc-idem", capacity_range: { required_bytes: 2 * GiB }, volume_capabilities: [MOUNT_RWX] }), "ALREADY_EXISTS", "pvc-idem");
    const id = a.reply.volume.volume_id;
    for (let i = 0; i < 2; i++) expect((await C("ControllerPublishVolume", { volume_id: id, node_id: "n1", volume_capability: MOUNT_RWX })).status).toBe("OK");
    expectStatus(await C("ControllerPublishVolume", { volume_id: id, node_id: "n1", volume_capability: MOUNT_RWX, readonly: true }), "ALREADY_EXISTS");
    const tp = target("n1", "pod-idem");
    for (let i = 0; i < 2; i++) expect((await N("n1", "NodePublishVolume", { volume_id: id, target_path: tp, volume_capability: MOUNT_RWX })).status).toBe("OK");
    expect(mountsAt("n1", tp)).toBe(1);
    expectStatus(await N("n1", "NodePublishVolume", { volume_id: id, target_path: tp, volume_capability: MOUNT_RWX, readonly: true }), "ALREADY_EXISTS", tp);
    for (let i = 0; i < 2; i++) expect((await N("n1", "NodeUnpublishVolume", { volume_id: id, target_path: tp })).status).toBe("OK");
    expect((await N("n1", "NodeUnpublishVolume", { volume_id: id, target_path: join(pods(), "never-mounted") })).status).toBe("OK");
    for (let i = 0; i < 2; i++) expect((await C("ControllerUnpublishVolume", { volume_id: id, node_id: "n1" })).status).toBe("OK");
    for (let i = 0; i < 2; i++) expect((await C("DeleteVolume", { volume_id: id })).status).toBe("OK");
    expect((await C("DeleteVolume", { volume_id: "pvc-never-existed" })).status).toBe("OK");
    expect((await C("ControllerUnpublishVolume", { volume_id: "pvc-never-existed", node_id: "n1" })).status).toBe("OK");
  });

  test("errors as the spec says: missing fields name the field, unknown volumes are NotFound, block is refused", async () => {
    expectStatus(await C("CreateVolume", { volume_capabilities: [MOUNT_RWX] }), "INVALID_ARGUMENT", "name");
    expectStatus(await C("CreateVolume", { name: "pvc-x" }), "INVALID_ARGUMENT", "volume_capabilities");
    expectStatus(await C("CreateVolume", { name: "pvc-x", volume_capabilities: [BLOCK] }), "INVALID_ARGUMENT", "block");
    expectStatus(await C("CreateVolume", { name: "pvc-x", volume_capabilities: [MOUNT_RWX], capacity_range: { required_bytes: 10, limit_bytes: 5 } }), "INVALID_ARGUMENT", "capacity_range");
    expectStatus(await C("DeleteVolume", {}), "INVALID_ARGUMENT", "volume_id");
    expectStatus(await C("ControllerPublishVolume", { node_id: "n1", volume_capability: MOUNT_RWX }), "INVALID_ARGUMENT", "volume_id");
    expectStatus(await C("ControllerPublishVolume", { volume_id: "pvc-nope", volume_capability: MOUNT_RWX }), "INVALID_ARGUMENT", "node_id");
    expectStatus(await C("ControllerPublishVolume", { volume_id: "pvc-nope", node_id: "n1" }), "INVALID_ARGUMENT", "volume_capability");
    expectStatus(await C("ControllerPublishVolume", { volume_id: "pvc-nope", node_id: "n1", volume_capability: MOUNT_RWX }), "NOT_FOUND", "pvc-nope");
    expectStatus(await C("ValidateVolumeCapabilities", { volume_id: "pvc-nope", volume_capabilities: [MOUNT_RWX] }), "NOT_FOUND");
    expectStatus(await C("ValidateVolumeCapabilities", { volume_id: "pvc-nope" }), "INVALID_ARGUMENT", "volume_capabilities");
    expectStatus(await C("ControllerExpandVolume", { volume_id: "pvc-nope", capacity_range: { required_bytes: GiB } }), "NOT_FOUND");
    expectStatus(await C("ListVolumes", { starting_token: "not-a-token" }), "ABORTED");
    expectStatus(await C("CreateSnapshot", { source_volume_id: "x", name: "s" }), "UNIMPLEMENTED");

    const v = (await C("CreateVolume", { name: "pvc-err", volume_capabilities: [MOUNT_RWO] })).reply.volume.volume_id;
    expectStatus(await C("ControllerPublishVolume", { volume_id: v, node_id: "no-such-node", volume_capability: MOUNT_RWO }), "NOT_FOUND", "no-such-node");
    expect((await C("ControllerPublishVolume", { volume_id: v, node_id: "n1", volume_capability: MOUNT_RWO })).status).toBe("OK");
    expectStatus(await C("ControllerPublishVolume", { volume_id: v, node_id: "n2", volume_capability: MOUNT_RWO }), "FAILED_PRECONDITION", "n1");
    const ok = await C("ValidateVolumeCapabilities", { volume_id: v, volume_capabilities: [MOUNT_RWX] });
    expect(ok.reply.confirmed.volume_capabilities).toHaveLength(1);
    const blk = await C("ValidateVolumeCapabilities", { volume_id: v, volume_capabilities: [BLOCK] });
    expect(blk.reply.confirmed).toBeNull();
    expect(blk.reply.message).toContain("block");

    const tp = target("n1", "pod-err");
    expectStatus(await N("n1", "NodePublishVolume", { target_path: tp, volume_capability: MOUNT_RWX }), "INVALID_ARGUMENT", "volume_id");
    expectStatus(await N("n1", "NodePublishVolume", { volume_id: v, volume_capability: MOUNT_RWX }), "INVALID_ARGUMENT", "target_path");
    expectStatus(await N("n1", "NodePublishVolume", { volume_id: v, target_path: tp }), "INVALID_ARGUMENT", "volume_capability");
    expectStatus(await N("n1", "NodePublishVolume", { volume_id: v, target_path: tp, volume_capability: BLOCK }), "INVALID_ARGUMENT", "block");
    expectStatus(await N("n1", "NodePublishVolume", { volume_id: "pvc-nope", target_path: tp, volume_capability: MOUNT_RWX }), "NOT_FOUND", "pvc-nope");
    expectStatus(await N("n1", "NodePublishVolume", { volume_id: "../../etc", target_path: tp, volume_capability: MOUNT_RWX }), "NOT_FOUND");
    expect(mountsAt("n1", tp)).toBe(0);
    expectStatus(await N("n1", "NodeUnpublishVolume", { volume_id: v }), "INVALID_ARGUMENT", "target_path");
    expectStatus(await N("n1", "NodeGetVolumeStats", { volume_id: v, volume_path: join(t.path, "nowhere") }), "NOT_FOUND");
    expectStatus(await N("n1", "NodeGetVolumeStats", { volume_id: "pvc-nope", volume_path: t.path }), "NOT_FOUND");
    expectStatus(await N("n1", "NodeStageVolume", { volume_id: v }), "UNIMPLEMENTED");
  });

  test("read-only publish: the pod can read, writes fail with EROFS", async () => {
    const v = (await C("CreateVolume", { name: "pvc-ro", volume_capabilities: [MOUNT_RWX] })).reply.volume.volume_id;
    fs.writeFileSync(on("n1", join(dirs("n1").mnt, "volumes", v, "input.txt")), "input");
    const tp = target("n2", "pod-ro");
    expect((await N("n2", "NodePublishVolume", { volume_id: v, target_path: tp, volume_capability: MOUNT_RWX, readonly: true })).status).toBe("OK");
    expect(fs.readFileSync(on("n2", join(tp, "input.txt")), "utf8")).toBe("input");
    expect(errCode(() => fs.writeFileSync(on("n2", join(tp, "new.txt")), "x"))).toBe("EROFS");
    expect((await N("n2", "NodeUnpublishVolume", { volume_id: v, target_path: tp })).status).toBe("OK");
  });

  test("pagination, capacity, expansion", async () => {
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) ids.push((await C("CreateVolume", { name: `pvc-page-${i}`, volume_capabilities: [MOUNT_RWX] })).reply.volume.volume_id);
    const seen: string[] = [];
    let token = "";
    let pages = 0;
    do {
      const r = await C("ListVolumes", { max_entries: 2, starting_token: token });
      expect(r.reply.entries.length).toBeLessThanOrEqual(2);
      seen.push(...r.reply.entries.map((e: { volume: { volume_id: string } }) => e.volume.volume_id));
      token = r.reply.next_token;
      pages++;
    } while (token);
    expect(pages).toBeGreaterThanOrEqual(3);
    for (const id of ids) expect(seen.filter((s) => s === id)).toHaveLength(1);
    expect(new Set(seen).size).toBe(seen.length);
    expect((await C("GetCapacity", { volume_capabilities: [MOUNT_RWX] })).reply.available_capacity).toBeGreaterThan(0);
    const ex = await C("ControllerExpandVolume", { volume_id: ids[0], capacity_range: { required_bytes: 3 * GiB } });
    expect(ex.reply.capacity_bytes).toBe(3 * GiB);
    const got = await C("ControllerGetVolume", { volume_id: ids[0] });
    expect(got.reply.volume.capacity_bytes).toBe(3 * GiB);
    for (const id of ids) await C("DeleteVolume", { volume_id: id });
  });

  test("concurrent calls on one volume: the others are Aborted, never half done", async () => {
    const rs = await Promise.all(Array.from({ length: 8 }, () => C("CreateVolume", { name: "pvc-race", volume_capabilities: [MOUNT_RWX] })));
    expect(rs.filter((r) => r.ok).length).toBeGreaterThanOrEqual(1);
    expect(rs.filter((r) => !r.ok).every((r) => r.status === "ABORTED")).toBe(true);
    expect(rs.some((r) => r.status === "ABORTED")).toBe(true);
    const id = rs.find((r) => r.ok)!.reply.volume.volume_id;
    const tp = target("n1", "pod-race");
    const ps = await Promise.all(Array.from({ length: 6 }, () => N("n1", "NodePublishVolume", { volume_id: id, target_path: tp, volume_capability: MOUNT_RWX })));
    expect(ps.filter((r) => !r.ok).every((r) => r.status === "ABORTED")).toBe(true);
    expect(mountsAt("n1", tp)).toBe(1);
    expect((await N("n1", "NodeUnpublishVolume", { volume_id: id, target_path: tp })).status).toBe("OK");
    await C("DeleteVolume", { volume_id: id });
  });

  test("a restart of csi-node keeps the pods' mounts; a dead node mount is brought back and the pods' mounts re-bound", async () => {
    const v = (await C("CreateVolume", { name: "pvc-keep", volume_capabilities: [MOUNT_RWX] })).reply.volume.volume_id;
    const tp = target("n1", "pod-keep");
    expect((await N("n1", "NodePublishVolume", { volume_id: v, target_path: tp, volume_capability: MOUNT_RWX })).status).toBe("OK");
    fs.writeFileSync(on("n1", join(tp, "before.txt")), "before");

    // The plugin dies hard (its socket file stays behind); the pod's mount does not notice.
    await nodes.n1!.stop("SIGKILL");
    expect(fs.readFileSync(on("n1", join(tp, "before.txt")), "utf8")).toBe("before");
    fs.writeFileSync(on("n1", join(tp, "while-down.txt")), "written while the plugin was down");
    nodes.n1 = await startNode("n1");
    expect(fs.readFileSync(on("n1", join(tp, "while-down.txt")), "utf8")).toContain("plugin was down");

    // The node daemon dies hard: the pod's mount answers ENOTCONN until csi-node brings it back.
    const old = daemonPid(dirs("n1").root)!;
    await stopNodeDaemon(dirs("n1").root, dirs("n1").mnt, "SIGKILL");
    await waitFor("the node daemon started again and the pod's mount re-bound", () => {
      const pid = daemonPid(dirs("n1").root);
      if (pid === undefined || pid === old) return false;
      try {
        return fs.readFileSync(on("n1", join(tp, "before.txt")), "utf8") === "before";
      } catch {
        return false;
      }
    }, 60_000);
    fs.writeFileSync(on("n1", join(tp, "after.txt")), "after");
    expect(fs.readFileSync(on("n2", join(dirs("n2").mnt, "volumes", v, "after.txt")), "utf8")).toBe("after");
    expect((await N("n1", "NodeUnpublishVolume", { volume_id: v, target_path: tp })).status).toBe("OK");
    expect(mountsAt("n1", tp)).toBe(0);
  });

  test("Probe says not ready while Redis does not answer, and ready again when it does", async () => {
    const ready = async (p: CsiProcess) => (await p.client.call("Identity", "Probe")).reply?.ready?.value === true;
    const port = redis.url;
    await redis.pause();
    try {
      await waitFor("controller not ready", async () => !(await ready(ctrl)));
      await waitFor("node plugin not ready", async () => !(await ready(nodes.n1!)));
    } finally {
      await redis.resume();
    }
    expect(redis.url).toBe(port);
    await waitFor("controller ready again", () => ready(ctrl));
    await waitFor("node plugin ready again", () => ready(nodes.n1!));
  });

  test("with SKIP_NODE_MOUNT the plugin is not ready until the node mount (run elsewhere) is up", async () => {
    const n = "n3";
    const { root, mnt } = dirs(n);
    const port = await freePort();
    const args = ["--redis-url", redis.url, "--node-url", `127.0.0.1:${port}`, "--root-dir", root, "--mount-point", mnt, "--pods-dir", pods(), "--check-interval", "0.2"];
    const started = startCsi("csi-node", t.path, n, args, { SKIP_NODE_MOUNT: "true" });
    // Not ready: nothing is mounted and this plugin starts nothing.
    const probeSock = join(t.path, `${n}.sock`);
    await waitFor("n3's socket", () => fs.existsSync(probeSock));
    expect(daemonPid(root)).toBeUndefined();
    // The node daemon started on its own (as its container would be): the plugin turns ready.
    const { startDaemon } = await import("./helpers/daemon.ts");
    const d = await startDaemon({ base: t.path, name: n, redisUrl: redis.url, root, mnt });
    try {
      nodes.n3 = await started;
      expect((await nodes.n3.client.call("Identity", "Probe")).reply.ready.value).toBe(true);
    } finally {
      await nodes.n3?.stop();
      delete nodes.n3;
      await d.stop();
    }
  });
});
