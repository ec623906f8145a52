import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { fuseUnavailable, tempDir, waitFor } from "./helpers/env.ts";
import { startRedisCluster, type TestRedisCluster } from "./helpers/redis.ts";
import { daemonPid, freePort, mountsIn, podTarget, startCsi, type CsiProcess } from "./helpers/csi.ts";

const skip = fuseUnavailable() ?? (Bun.which("redis-server") ? undefined : "redis-server is not installed");

const MOUNT_RWX = { mount: { fs_type: "", mount_flags: [] }, access_mode: { mode: "MULTI_NODE_MULTI_WRITER" } };

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

/**
 * The CSI driver on a real three-primary Redis Cluster: each volume a filesystem of its own under its
 * own hash tag, served on each node by a daemon of its own. Node plugins run in private mount
 * namespaces, as in csi.test.ts.
 */
describe.skipIf(!!skip)("CSI driver on a Redis Cluster", () => {
  let t: ReturnType<typeof tempDir>;
  let cluster: TestRedisCluster;
  let ctrl: CsiProcess;
  const nodes: Record<string, CsiProcess> = {};
  const dirs = (n: string) => ({ root: join(t.path, `${n}-root`), mnt: join(t.path, `${n}-mnt`) });
  const pods = () => join(t.path, "kubelet-pods");
  const target = (n: string, pod: string) => podTarget(pods(), n, pod);
  /** The pids of node n's volume daemons, by tag. */
  const daemons = (n: string) => {
    const root = dirs(n).root;
    const out = new Map<string, number>();
    for (const tag of fs.existsSync(root) ? fs.readdirSync(root) : []) {
      const pid = daemonPid(join(root, tag));
      if (pid !== undefined) out.set(tag, pid);
    }
    return out;
  };
  /** A pid in node n's mount namespace: its plugin, or while that is down one of its daemons. */
  const nsPid = (n: string) => {
    const p = nodes[n]?.proc;
    return p && p.exitCode === null && p.signalCode === null ? p.pid : [...daemons(n).values()][0]!;
  };
  const on = (n: string, p: string) => `/proc/${nsPid(n)}/root${p}`;
  const mountsAt = (n: string, p: string) => mountsIn(nsPid(n), p);
  const readable = (path: string, want: string) => {
    try {
      return fs.readFileSync(path, "utf8") === want;
    } catch {
      return false;
    }
  };

  async function startNode(n: string): Promise<CsiProcess> {
    const { root, mnt } = dirs(n);
    const running = [...daemons(n).values()][0];
    const wrap = running === undefined ? ["unshare", "-m", "--propagation", "private"] : ["nsenter", "-t", String(running), "-m", "--"];
    return startCsi("csi-node", t.path, n, ["--redis-url", cluster.url, "--node-url", `127.0.0.1:${await freePort()}`, "--root-dir", root, "--mount-point", mnt, "--pods-dir", pods(), "--cluster-secret-file", join(t.path, "secret"), "--check-interval", "0.2"], {
      MULTICLOUD_FS_DISK_CACHE: join(t.path, `${n}-cache`),
    }, wrap);
  }

  const C = (m: string, r?: object) => ctrl.client.call("Controller", m, r);
  const N = (n: string, m: string, r?: object) => nodes[n]!.client.call("Node", m, r);
  /** Every key of the cluster holding s, on every primary, with the port it is on. */
  async function keysWith(s: string): Promise<{ port: number; key: string }[]> {
    const out: { port: number; key: string }[] = [];
    for (const port of cluster.ports) for (const key of (await cluster.cliAt(port, "--scan", "--pattern", `*${s}*`)).split("\n").filter(Boolean)) out.push({ port, key });
    return out;
  }
  const tagOf = async (id: string) => cluster.cliAt(cluster.ports[0]!, "-c", "hget", `{mcfs}:csi:vol:${id}`, "tag");

  beforeAll(async () => {
    t = tempDir("csi-cluster");
    fs.writeFileSync(join(t.path, "secret"), "csi-test-cluster-secret-0123456789\n", { mode: 0o600 });
    cluster = await startRedisCluster();
    ctrl = await startCsi("csi-controller", t.path, "controller", ["--redis-url", cluster.url]);
    nodes.n1 = await startNode("n1");
    nodes.n2 = await startNode("n2");
  });

  afterAll(async () => {
    await ctrl?.stop();
    for (const [n, p] of Object.entries(nodes)) {
      const left = daemons(n);
      await p.stop();
      // Their mounts are in the plugin's private namespace: they go with its last process.
      for (const pid of left.values()) process.kill(pid, "SIGTERM");
      for (const pid of left.values()) await waitFor(`daemon ${pid} to exit`, () => !alive(pid));
    }
    await cluster?.stop();
    t?.remove();
  });

  test("each volume is a filesystem under its own tag, the volumes spread over the primaries; pods on two nodes share one; DeleteVolume removes its keys and every node's bytes", async () => {
    const ids: string[] = [];
    for (const name of ["pvc-a", "pvc-b", "pvc-c"]) {
      const r = await C("CreateVolume", { name, volume_capabilities: [MOUNT_RWX] });
      expect(r.status).toBe("OK");
      ids.push(r.reply.volume.volume_id);
    }
    const tags = await Promise.all(ids.map(tagOf));
    expect(new Set(tags).size).toBe(3);
    // Each volume's keys all carry its tag, all on one primary; three volumes, three primaries.
    const homes = new Set<number>();
    for (const tag of tags) {
      const keys = await keysWith(tag);
      expect(keys.length).toBeGreaterThan(0);
      for (const k of keys) expect(k.key.startsWith(`{${tag}}:`)).toBe(true);
      expect(new Set(keys.map((k) => k.port)).size).toBe(1);
      homes.add(keys[0]!.port);
    }
    expect(homes.size).toBe(3);
    // CreateVolume again answers the same volume, the same filesystem.
    expect((await C("CreateVolume", { name: "pvc-a", volume_capabilities: [MOUNT_RWX] })).reply.volume.volume_id).toBe(ids[0]);
    expect(await tagOf(ids[0]!)).toBe(tags[0]!);

    const [a] = ids as [string];
    for (const n of ["n1", "n2"]) expect((await C("ControllerPublishVolume", { volume_id: a, node_id: n, volume_capability: MOUNT_RWX })).status).toBe("OK");
    const t1 = target("n1", "pod-a"), t2 = target("n2", "pod-b");
    expect((await N("n1", "NodePublishVolume", { volume_id: a, target_path: t1, volume_capability: MOUNT_RWX })).status).toBe("OK");
    expect((await N("n2", "NodePublishVolume", { volume_id: a, target_path: t2, volume_capability: MOUNT_RWX })).status).toBe("OK");
    expect([mountsAt("n1", t1), mountsAt("n2", t2)]).toEqual([1, 1]);
    const data = "written by pod a on n1\n".repeat(1000);
    fs.mkdirSync(on("n1", join(t1, "out")));
    fs.writeFileSync(on("n1", join(t1, "out/result.txt")), data);
    fs.writeFileSync(on("n1", join(t1, "out/later.txt")), "read after n1's pod is gone");
    expect(fs.readFileSync(on("n2", join(t2, "out/result.txt")), "utf8")).toBe(data);
    // The pod sees its volume's filesystem: nothing of the others.
    expect(fs.readdirSync(on("n2", t2))).toEqual(["out"]);
    const n1Daemon = daemons("n1").get(tags[0]!)!;
    expect(n1Daemon).toBeGreaterThan(0);
    // A node pays each volume's RAM tier: a volume's daemon keeps a small one, whatever the CLI's default.
    const args = fs.readFileSync(`/proc/${n1Daemon}/cmdline`, "utf8").split("\0");
    expect(args[args.indexOf("--ram-cache-mib") + 1]).toBe("64");

    // n1's pod goes; n1's daemon of the volume stays, and serves the bytes only n1 has.
    expect((await N("n1", "NodeUnpublishVolume", { volume_id: a, target_path: t1 })).status).toBe("OK");
    expect(mountsAt("n1", t1)).toBe(0);
    expect(fs.readFileSync(on("n2", join(t2, "out/later.txt")), "utf8")).toBe("read after n1's pod is gone");
    expect((await N("n2", "NodeUnpublishVolume", { volume_id: a, target_path: t2 })).status).toBe("OK");
    for (const n of ["n1", "n2"]) expect((await C("ControllerUnpublishVolume", { volume_id: a, node_id: n })).status).toBe("OK");

    // Both nodes still serve the volume when it is deleted: they stop, then its keys go.
    const served = [...daemons("n1").entries(), ...daemons("n2").entries()].filter(([tag]) => tag === tags[0]).map(([, pid]) => pid);
    expect(served.length).toBe(2);
    expect((await C("DeleteVolume", { volume_id: a })).status).toBe("OK");
    expect(await keysWith(tags[0]!)).toEqual([]);
    for (const pid of served) expect(alive(pid)).toBe(false);
    await waitFor("both nodes to drop the volume's bytes", () => !fs.existsSync(join(dirs("n1").root, tags[0]!)) && !fs.existsSync(join(dirs("n2").root, tags[0]!)));
    expect(fs.existsSync(join(t.path, "n1-cache", tags[0]!))).toBe(false);
    expect(mountsAt("n1", join(dirs("n1").mnt, tags[0]!))).toBe(0);
    expect((await C("ListVolumes", {})).reply.entries.map((e: { volume: { volume_id: string } }) => e.volume.volume_id).sort()).toEqual(ids.slice(1).sort());
    // The name again: a new, empty filesystem under a new tag.
    expect((await C("CreateVolume", { name: "pvc-a", volume_capabilities: [MOUNT_RWX] })).reply.volume.volume_id).toBe(a);
    const again = await tagOf(a);
    expect(again).not.toBe(tags[0]!);
    const t3 = target("n2", "pod-c");
    expect((await N("n2", "NodePublishVolume", { volume_id: a, target_path: t3, volume_capability: MOUNT_RWX })).status).toBe("OK");
    expect(fs.readdirSync(on("n2", t3))).toEqual([]);
    expect((await N("n2", "NodeUnpublishVolume", { volume_id: a, target_path: t3 })).status).toBe("OK");
    for (const id of ids) expect((await C("DeleteVolume", { volume_id: id })).status).toBe("OK");
    for (const tag of [...tags, again]) expect(await keysWith(tag)).toEqual([]);
    await waitFor("no volume daemon left", () => daemons("n1").size === 0 && daemons("n2").size === 0);
  });

  test("a volume's daemon killed: the node plugin starts it again and re-binds the pod's mount; a killed plugin leaves the pod's mount alone", async () => {
    const v = (await C("CreateVolume", { name: "pvc-keep", volume_capabilities: [MOUNT_RWX] })).reply.volume.volume_id;
    const tag = await tagOf(v);
    const tp = target("n1", "pod-keep");
    expect((await N("n1", "NodePublishVolume", { volume_id: v, target_path: tp, volume_capability: MOUNT_RWX })).status).toBe("OK");
    fs.writeFileSync(on("n1", join(tp, "before.txt")), "before");

    await nodes.n1!.stop("SIGKILL");
    fs.writeFileSync(on("n1", join(tp, "while-down.txt")), "written while the plugin was down");
    nodes.n1 = await startNode("n1");
    expect(fs.readFileSync(on("n1", join(tp, "while-down.txt")), "utf8")).toContain("plugin was down");

    const old = daemons("n1").get(tag)!;
    process.kill(old, "SIGKILL");
    await waitFor("the volume's daemon started again and the pod's mount re-bound", () => {
      const pid = daemons("n1").get(tag);
      return pid !== undefined && pid !== old && readable(on("n1", join(tp, "before.txt")), "before");
    }, 60_000);
    expect(mountsAt("n1", tp)).toBe(1);
    fs.writeFileSync(on("n1", join(tp, "after.txt")), "after");
    const t2 = target("n2", "pod-keep2");
    expect((await N("n2", "NodePublishVolume", { volume_id: v, target_path: t2, volume_capability: MOUNT_RWX })).status).toBe("OK");
    expect(fs.readFileSync(on("n2", join(t2, "after.txt")), "utf8")).toBe("after");
    for (const [n, p] of [["n1", tp], ["n2", t2]] as const) expect((await N(n, "NodeUnpublishVolume", { volume_id: v, target_path: p })).status).toBe("OK");
    expect((await C("DeleteVolume", { volume_id: v })).status).toBe("OK");
    expect(await keysWith(tag)).toEqual([]);
  });

  test("a node away while its volume is deleted removes the volume's bytes when it is back", async () => {
    const v = (await C("CreateVolume", { name: "pvc-away", volume_capabilities: [MOUNT_RWX] })).reply.volume.volume_id;
    const tag = await tagOf(v);
    const tp = target("n2", "pod-away");
    expect((await N("n2", "NodePublishVolume", { volume_id: v, target_path: tp, volume_capability: MOUNT_RWX })).status).toBe("OK");
    fs.writeFileSync(on("n2", join(tp, "only-on-n2.txt")), "n2's bytes");
    expect((await N("n2", "NodeUnpublishVolume", { volume_id: v, target_path: tp })).status).toBe("OK");
    // n2 goes down hard, plugin and daemon: its heartbeat outlives it for a while.
    const pid = daemons("n2").get(tag)!;
    await nodes.n2!.stop("SIGKILL");
    process.kill(pid, "SIGKILL");
    await waitFor("n2's daemon gone", () => !alive(pid));
    expect((await C("DeleteVolume", { volume_id: v })).status).toBe("OK");
    expect(await keysWith(tag)).toEqual([]);
    expect(fs.existsSync(join(dirs("n2").root, tag, "only-on-n2.txt"))).toBe(true);
    nodes.n2 = await startNode("n2");
    await waitFor("n2 to remove the deleted volume's bytes", () => !fs.existsSync(join(dirs("n2").root, tag)));
    expect(daemons("n2").has(tag)).toBe(false);
  });

  test("NodePublish racing DeleteVolume: whatever answers, nothing of the volume is left (no key, no bytes, no daemon) and it is never made again", async () => {
    for (const delay of [0, 50, 150, 300]) {
      const v = (await C("CreateVolume", { name: `pvc-race-${delay}`, volume_capabilities: [MOUNT_RWX] })).reply.volume.volume_id;
      const tag = await tagOf(v);
      const tp = target("n1", `pod-race-${delay}`);
      const publish = N("n1", "NodePublishVolume", { volume_id: v, target_path: tp, volume_capability: MOUNT_RWX });
      await Bun.sleep(delay);
      expect((await C("DeleteVolume", { volume_id: v })).status).toBe("OK");
      await publish;
      await waitFor(`volume ${tag} gone from n1 and from the cluster`, async () => !fs.existsSync(join(dirs("n1").root, tag)) && !daemons("n1").has(tag) && (await keysWith(tag)).length === 0);
      await N("n1", "NodeUnpublishVolume", { volume_id: v, target_path: tp });
    }
  });

  test("records edited in Redis to name the registry's tag or another volume's: DeleteVolume removes only the record, the registry and the other filesystem stay", async () => {
    const ids: string[] = [];
    for (const name of ["pvc-edit-a", "pvc-edit-b", "pvc-edit-c"]) ids.push((await C("CreateVolume", { name, volume_capabilities: [MOUNT_RWX] })).reply.volume.volume_id);
    const [a, b, c] = ids as [string, string, string];
    const tagA = await tagOf(a);
    const keysA = (await keysWith(tagA)).length;
    const registryKeys = (await keysWith("{mcfs}:csi")).length;
    await cluster.cliAt(cluster.ports[0]!, "-c", "hset", `{mcfs}:csi:vol:${b}`, "tag", "mcfs");
    await cluster.cliAt(cluster.ports[0]!, "-c", "hset", `{mcfs}:csi:vol:${c}`, "tag", tagA);
    expect((await C("DeleteVolume", { volume_id: b })).status).toBe("OK");
    expect((await C("DeleteVolume", { volume_id: c })).status).toBe("OK");
    expect((await keysWith(tagA)).length).toBe(keysA);
    expect((await keysWith("{mcfs}:csi")).length).toBeGreaterThanOrEqual(registryKeys - 2);
    expect((await C("ListVolumes", {})).reply.entries.map((e: { volume: { volume_id: string } }) => e.volume.volume_id)).toContain(a);
    const tp = target("n2", "pod-edit");
    expect((await N("n2", "NodePublishVolume", { volume_id: a, target_path: tp, volume_capability: MOUNT_RWX })).status).toBe("OK");
    fs.writeFileSync(on("n2", join(tp, "still.txt")), "a's filesystem still works");
    expect((await N("n2", "NodeUnpublishVolume", { volume_id: a, target_path: tp })).status).toBe("OK");
    expect((await C("DeleteVolume", { volume_id: a })).status).toBe("OK");
    expect(await keysWith(tagA)).toEqual([]);
  });
});
