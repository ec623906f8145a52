import { beforeEach, describe, expect, test } from "bun:test";
import { Code, ConnectError, createClient, createRouterTransport, type Client } from "@connectrpc/connect";
import type { MessageInitShape } from "@bufbuild/protobuf";
import pino from "pino";
import { Controller, VolumeCapability_AccessMode_Mode as Mode, type VolumeCapabilitySchema } from "../../src/gen/csi/v1/csi_pb.ts";
import { createControllerService, volumeIdFor } from "../../src/csi/controller.ts";
import { createMemoryVolumeRegistry } from "../../src/csi/memory-volume-registry.ts";
import { createStoreVolumeDirs } from "../../src/csi/store-volume-dirs.ts";
import type { VolumeRegistry } from "../../src/csi/volume-registry.ts";
import { createMemorySpace, createMemoryStore, type MemorySpace } from "../../src/meta/memory-store.ts";
import type { MetadataStore } from "../../src/meta/store.ts";

type Cap = MessageInitShape<typeof VolumeCapabilitySchema>;
const cap = (mode: Mode, accessType: Cap["accessType"] = { case: "mount", value: {} }): Cap => ({ accessType, accessMode: { mode } });
const RWX = cap(Mode.MULTI_NODE_MULTI_WRITER);
const RWO = cap(Mode.SINGLE_NODE_WRITER);
const BLOCK = cap(Mode.MULTI_NODE_MULTI_WRITER, { case: "block", value: {} });
const NAME = "pvc-0b6c2b4e-5c4a-4f0e-9d43-2f1f6e0b9a11";

/**
 * The controller in-process, over the memory store and registry (each passes the contract its Redis
 * counterpart passes), spoken to through Connect's in-memory transport: errors arrive as gRPC codes.
 * Table-driven after csi-driver-host-path's pkg/hostpath/controllerserver_test.go.
 */
let space: MemorySpace, store: MetadataStore, registry: VolumeRegistry, ctrl: Client<typeof Controller>;

beforeEach(async () => {
  space = createMemorySpace();
  store = createMemoryStore({ space, nodeId: "csi-controller:test" });
  await store.init(0o755, 0, 0);
  registry = createMemoryVolumeRegistry();
  const impl = createControllerService({ registry, dirs: createStoreVolumeDirs(store), log: pino({ level: "silent" }) });
  ctrl = createClient(Controller, createRouterTransport(({ service }) => service(Controller, impl)));
});

/** The gRPC code a call fails with, and its message ("OK" when it succeeds). */
async function code(p: Promise<unknown>): Promise<[string, string]> {
  try {
    await p;
    return ["OK", ""];
  } catch (e) {
    if (!(e instanceof ConnectError)) throw e;
    return [Code[e.code], e.rawMessage];
  }
}

/** The volume's directory in the namespace, if any. */
async function volumeDir(id: string) {
  const vols = await store.lookup(1, "volumes").catch(() => undefined);
  return vols && store.lookup(vols.ino, id).catch(() => undefined);
}

describe("CreateVolume", () => {
  test.each<[string, Parameters<typeof ctrl.createVolume>[0], string, RegExp]>([
    ["no name", { volumeCapabilities: [RWX] }, "InvalidArgument", /^name is required/],
    ["a name longer than a PV name", { name: "x".repeat(254), volumeCapabilities: [RWX] }, "InvalidArgument", /^name is 254 bytes/],
    ["no capabilities", { name: NAME }, "InvalidArgument", /^volume_capabilities is required/],
    ["a capability without access mode", { name: NAME, volumeCapabilities: [{ accessType: { case: "mount", value: {} } }] }, "InvalidArgument", /volume_capabilities\[0\]\.access_mode/],
    ["a capability without access type", { name: NAME, volumeCapabilities: [{ accessMode: { mode: Mode.SINGLE_NODE_WRITER } }] }, "InvalidArgument", /volume_capabilities\[0\]\.access_type/],
    ["block access", { name: NAME, volumeCapabilities: [BLOCK] }, "InvalidArgument", /block access is not supported/],
    ["an unknown access mode", { name: NAME, volumeCapabilities: [cap(Mode.UNKNOWN)] }, "InvalidArgument", /access mode is missing or unknown/],
    ["a snapshot source", { name: NAME, volumeCapabilities: [RWX], volumeContentSource: { type: { case: "snapshot", value: { snapshotId: "s1" } } } }, "InvalidArgument", /^volume_content_source/],
    ["a negative required size", { name: NAME, volumeCapabilities: [RWX], capacityRange: { requiredBytes: -1n } }, "InvalidArgument", /required_bytes must not be negative/],
    ["a negative limit", { name: NAME, volumeCapabilities: [RWX], capacityRange: { limitBytes: -1n } }, "InvalidArgument", /limit_bytes must not be negative/],
    ["required above limit", { name: NAME, volumeCapabilities: [RWX], capacityRange: { requiredBytes: 10n, limitBytes: 5n } }, "InvalidArgument", /^capacity_range has required_bytes above limit_bytes/],
    ["a size past 2^53", { name: NAME, volumeCapabilities: [RWX], capacityRange: { requiredBytes: 2n ** 53n } }, "OutOfRange", /required_bytes/],
    ["replicas that is not a count", { name: NAME, volumeCapabilities: [RWX], parameters: { replicas: "two" } }, "InvalidArgument", /^parameters replicas must be an integer 1\.\.16, got "two"/],
    ["replicas past the most", { name: NAME, volumeCapabilities: [RWX], parameters: { replicas: "17" } }, "InvalidArgument", /^parameters replicas/],
  ])("%s: refused, nothing made", async (_what, req, want, msg) => {
    const [got, message] = await code(ctrl.createVolume(req));
    expect(got).toBe(want);
    expect(message).toMatch(msg);
    expect(await store.listDir(1)).toEqual([]);
    expect((await registry.list("", 10)).records).toEqual([]);
  });

  test("makes /volumes/<name> (world-writable) and records the capacity asked for", async () => {
    const r = await ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX, RWO], capacityRange: { requiredBytes: 1000n, limitBytes: 5000n } });
    expect(r.volume?.volumeId).toBe(NAME);
    expect(r.volume?.capacityBytes).toBe(1000n);
    expect((await volumeDir(NAME))?.mode).toBe(0o040777);
    expect(await registry.get(NAME)).toMatchObject({ id: NAME, name: NAME, capacity: 1000 });
  });

  test("the StorageClass parameter replicas marks the volume's directory; without it, nothing", async () => {
    await ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX], parameters: { replicas: "2" } });
    expect(Buffer.from((await store.getXattr((await volumeDir(NAME))!.ino, "user.mcfs.replicas"))!).toString()).toBe("2");
    expect(await store.setting("replica-dirs")).toBe("1");
    await ctrl.createVolume({ name: "pvc-plain", volumeCapabilities: [RWX] });
    expect(await store.getXattr((await volumeDir("pvc-plain"))!.ino, "user.mcfs.replicas")).toBeUndefined();
  });

  test("only a limit: that is the capacity; none: 0", async () => {
    expect((await ctrl.createVolume({ name: "pvc-a", volumeCapabilities: [RWX], capacityRange: { limitBytes: 77n } })).volume?.capacityBytes).toBe(77n);
    expect((await ctrl.createVolume({ name: "pvc-b", volumeCapabilities: [RWX] })).volume?.capacityBytes).toBe(0n);
  });

  test("a name that cannot be a directory name gets a digest for id", async () => {
    const r = await ctrl.createVolume({ name: "../../etc", volumeCapabilities: [RWX] });
    expect(r.volume?.volumeId).toMatch(/^v-[0-9a-f]{40}$/);
    expect(r.volume?.volumeId).toBe(volumeIdFor("../../etc"));
    expect(await volumeDir(r.volume!.volumeId)).toBeDefined();
  });

  test("idempotent for the same name and a fitting size; AlreadyExists for a size that does not fit", async () => {
    const a = await ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX], capacityRange: { requiredBytes: 100n } });
    const b = await ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX], capacityRange: { requiredBytes: 50n, limitBytes: 200n } });
    expect(b.volume).toEqual(a.volume);
    const [got] = await code(ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX], capacityRange: { requiredBytes: 101n } }));
    expect(got).toBe("AlreadyExists");
    expect((await code(ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX], capacityRange: { limitBytes: 99n } })))[0]).toBe("AlreadyExists");
  });

  test("a directory lost after its record is made again by a retry", async () => {
    await ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX] });
    const vols = await store.lookup(1, "volumes");
    await store.remove(vols.ino, NAME, true);
    await ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX] });
    expect(await volumeDir(NAME)).toBeDefined();
  });
});

describe("DeleteVolume", () => {
  test("no id: InvalidArgument", async () => {
    expect(await code(ctrl.deleteVolume({}))).toEqual(["InvalidArgument", "volume_id is required"]);
  });

  test("removes the record and the whole tree, telling the holders", async () => {
    await ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX] });
    const dir = (await volumeDir(NAME))!;
    const sub = await store.create(dir.ino, "sub", { mode: 0o040755, uid: 0, gid: 0 });
    const f = await store.create(sub.ino, "f", { mode: 0o100644, uid: 0, gid: 0, holder: "node-1" });
    await ctrl.deleteVolume({ volumeId: NAME });
    expect(await volumeDir(NAME)).toBeUndefined();
    expect(await registry.get(NAME)).toBeUndefined();
    // The file is purged, not left orphaned; node-1 is told to delete its bytes.
    expect(await store.orphans()).toEqual([]);
    expect(await store.getMany([f.ino, sub.ino])).toEqual([undefined, undefined]);
    expect(await createMemoryStore({ space, nodeId: "node-1" }).takeTodo()).toEqual([{ op: "rm", path: `/volumes/${NAME}/sub/f`, id: `${f.ino}:${f.gen}`, last: true, v: String(f.version) }]);
  });

  test("an unknown volume, or an id that names no directory: OK, nothing touched", async () => {
    await ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX] });
    for (const volumeId of ["pvc-never", "../volumes", "/", ".."]) expect(await code(ctrl.deleteVolume({ volumeId }))).toEqual(["OK", ""]);
    expect(await volumeDir(NAME)).toBeDefined();
    expect((await store.listDir(1)).map((e) => e.name)).toEqual(["volumes"]);
  });
});

describe("ListVolumes", () => {
  beforeEach(async () => {
    for (const n of ["pvc-c", "pvc-a", "pvc-e", "pvc-b", "pvc-d"]) await ctrl.createVolume({ name: n, volumeCapabilities: [RWX], capacityRange: { requiredBytes: 10n } });
  });

  test.each<[string, string, Parameters<typeof ctrl.listVolumes>[0]]>([
    ["a negative max_entries", "InvalidArgument", { maxEntries: -1 }],
    ["a token this plugin never gave", "Aborted", { startingToken: "bogus" }],
  ])("%s: %s", async (_what, want, req) => {
    expect((await code(ctrl.listVolumes(req)))[0]).toBe(want);
  });

  test("pages in id order with tokens, each volume once, with its published nodes", async () => {
    await registry.reportNode("n1", { free: 1, total: 2, at: 3 });
    await ctrl.controllerPublishVolume({ volumeId: "pvc-b", nodeId: "n1", volumeCapability: RWX });
    const seen: string[] = [];
    let token = "";
    const pages: number[] = [];
    do {
      const r = await ctrl.listVolumes({ maxEntries: 2, startingToken: token });
      pages.push(r.entries.length);
      for (const e of r.entries) {
        seen.push(e.volume!.volumeId);
        expect(e.volume!.capacityBytes).toBe(10n);
        expect(e.status?.publishedNodeIds).toEqual(e.volume!.volumeId === "pvc-b" ? ["n1"] : []);
      }
      token = r.nextToken;
    } while (token);
    expect(pages).toEqual([2, 2, 1]);
    expect(seen).toEqual(["pvc-a", "pvc-b", "pvc-c", "pvc-d", "pvc-e"]);
    const all = await ctrl.listVolumes({});
    expect(all.entries).toHaveLength(5);
    expect(all.nextToken).toBe("");
  });
});

describe("ValidateVolumeCapabilities", () => {
  beforeEach(async () => {
    await ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX] });
  });

  test.each<[string, string, Parameters<typeof ctrl.validateVolumeCapabilities>[0]]>([
    ["no id", "InvalidArgument", { volumeCapabilities: [RWX] }],
    ["no capabilities", "InvalidArgument", { volumeId: NAME }],
    ["a capability without access mode", "InvalidArgument", { volumeId: NAME, volumeCapabilities: [{ accessType: { case: "mount", value: {} } }] }],
    ["an unknown volume", "NotFound", { volumeId: "pvc-none", volumeCapabilities: [RWX] }],
  ])("%s: %s", async (_what, want, req) => {
    expect((await code(ctrl.validateVolumeCapabilities(req)))[0]).toBe(want);
  });

  test("mount access in any mode is confirmed, echoing what was asked", async () => {
    const r = await ctrl.validateVolumeCapabilities({ volumeId: NAME, volumeCapabilities: [RWX, RWO], parameters: { a: "b" } });
    expect(r.confirmed?.volumeCapabilities).toHaveLength(2);
    expect(r.confirmed?.parameters).toEqual({ a: "b" });
    expect(r.message).toBe("");
  });

  test("block access is not confirmed, and says why", async () => {
    const r = await ctrl.validateVolumeCapabilities({ volumeId: NAME, volumeCapabilities: [RWX, BLOCK] });
    expect(r.confirmed).toBeUndefined();
    expect(r.message).toMatch(/block access is not supported/);
  });
});

describe("ControllerExpandVolume", () => {
  beforeEach(async () => {
    await ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX], capacityRange: { requiredBytes: 100n } });
  });

  test.each<[string, string, Parameters<typeof ctrl.controllerExpandVolume>[0]]>([
    ["no id", "InvalidArgument", { capacityRange: { requiredBytes: 10n } }],
    ["no capacity range", "InvalidArgument", { volumeId: NAME }],
    ["a negative size", "InvalidArgument", { volumeId: NAME, capacityRange: { requiredBytes: -5n } }],
    ["a size past 2^53", "OutOfRange", { volumeId: NAME, capacityRange: { requiredBytes: 2n ** 60n } }],
    ["a limit below the present size (no shrinking)", "OutOfRange", { volumeId: NAME, capacityRange: { limitBytes: 50n } }],
    ["an unknown volume", "NotFound", { volumeId: "pvc-none", capacityRange: { requiredBytes: 10n } }],
  ])("%s: %s, capacity unchanged", async (_what, want, req) => {
    expect((await code(ctrl.controllerExpandVolume(req)))[0]).toBe(want);
    expect((await registry.get(NAME))?.capacity).toBe(100);
  });

  test("grows; asking for less keeps the size; no node expansion needed", async () => {
    expect(await ctrl.controllerExpandVolume({ volumeId: NAME, capacityRange: { requiredBytes: 300n } })).toMatchObject({ capacityBytes: 300n, nodeExpansionRequired: false });
    expect((await registry.get(NAME))?.capacity).toBe(300);
    expect((await ctrl.controllerExpandVolume({ volumeId: NAME, capacityRange: { requiredBytes: 10n } })).capacityBytes).toBe(300n);
    expect((await registry.get(NAME))?.capacity).toBe(300);
  });
});

describe("ControllerPublishVolume", () => {
  beforeEach(async () => {
    await ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX] });
    for (const n of ["n1", "n2"]) await registry.reportNode(n, { free: 1, total: 2, at: 3 });
  });

  test.each<[string, string, Parameters<typeof ctrl.controllerPublishVolume>[0]]>([
    ["no volume id", "InvalidArgument", { nodeId: "n1", volumeCapability: RWX }],
    ["no node id", "InvalidArgument", { volumeId: NAME, volumeCapability: RWX }],
    ["no capability", "InvalidArgument", { volumeId: NAME, nodeId: "n1" }],
    ["block access", "InvalidArgument", { volumeId: NAME, nodeId: "n1", volumeCapability: BLOCK }],
    ["an unknown volume", "NotFound", { volumeId: "pvc-none", nodeId: "n1", volumeCapability: RWX }],
    ["a node no plugin reported", "NotFound", { volumeId: NAME, nodeId: "n9", volumeCapability: RWX }],
  ])("%s: %s", async (_what, want, req) => {
    expect((await code(ctrl.controllerPublishVolume(req)))[0]).toBe(want);
    expect(await registry.publications(NAME)).toEqual(new Map());
  });

  test("idempotent; other options on the same node: AlreadyExists; single-node elsewhere: FailedPrecondition", async () => {
    await ctrl.controllerPublishVolume({ volumeId: NAME, nodeId: "n1", volumeCapability: RWO });
    await ctrl.controllerPublishVolume({ volumeId: NAME, nodeId: "n1", volumeCapability: RWO });
    expect((await code(ctrl.controllerPublishVolume({ volumeId: NAME, nodeId: "n1", volumeCapability: RWO, readonly: true })))[0]).toBe("AlreadyExists");
    expect((await code(ctrl.controllerPublishVolume({ volumeId: NAME, nodeId: "n2", volumeCapability: RWX })))[0]).toBe("FailedPrecondition");
    await ctrl.controllerUnpublishVolume({ volumeId: NAME, nodeId: "n1" });
    await ctrl.controllerPublishVolume({ volumeId: NAME, nodeId: "n2", volumeCapability: RWX });
    expect([...(await registry.publications(NAME)).keys()]).toEqual(["n2"]);
  });

  test("a volume whose DeleteVolume has begun: publish is NotFound, a create of its name Aborted; the retried delete ends it", async () => {
    await registry.markDeleting(NAME);
    expect(await code(ctrl.controllerPublishVolume({ volumeId: NAME, nodeId: "n1", volumeCapability: RWX }))).toEqual(["NotFound", `volume ${NAME} is being deleted`]);
    expect((await code(ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX] })))[0]).toBe("Aborted");
    expect(await registry.publications(NAME)).toEqual(new Map());
    await ctrl.deleteVolume({ volumeId: NAME });
    expect(await code(ctrl.createVolume({ name: NAME, volumeCapabilities: [RWX] }))).toEqual(["OK", ""]);
  });
});
