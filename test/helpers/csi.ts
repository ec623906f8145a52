import { spawn, type Subprocess } from "bun";
import { existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { MCFS, REPO, freePort, waitFor } from "./env.ts";
import { forceUnmount, isMounted } from "./daemon.ts";

/** A gRPC client made by grpc-js from the .proto, independent of Connect: what kubelet and the sidecars are. */
const def = protoLoader.loadSync(join(REPO, "proto/csi/v1/csi.proto"), { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true });
const csi = (grpc.loadPackageDefinition(def) as unknown as { csi: { v1: Record<string, grpc.ServiceClientConstructor> } }).csi.v1;

export interface CallResult {
  ok: boolean;
  code: number;
  /** gRPC status name, "OK" on success. */
  status: string;
  message: string;
  /** The reply as grpc-js decodes it (checked field by field by the tests). */
  reply: any;
}

export interface CsiClient {
  call(service: "Identity" | "Controller" | "Node", method: string, req?: object): Promise<CallResult>;
  close(): void;
}

export function csiClient(socket: string): CsiClient {
  const clients = new Map<string, grpc.Client>();
  const get = (svc: string) => {
    let c = clients.get(svc);
    if (!c) clients.set(svc, (c = new csi[svc]!(`unix://${socket}`, grpc.credentials.createInsecure())));
    return c;
  };
  return {
    call(service, method, req = {}) {
      const c = get(service) as unknown as Record<string, (r: object, cb: (e: grpc.ServiceError | null, r: unknown) => void) => void>;
      const fn = c[method];
      if (!fn) throw new Error(`no method ${service}.${method}`);
      return new Promise((res) =>
        fn.call(c, req, (e, reply) =>
          // grpc-js undoes grpc-message's percent-encoding with decodeURI, which leaves "/" as %2F.
          res(e ? { ok: false, code: e.code, status: grpc.status[e.code]!, message: decodeURIComponent(e.details), reply: undefined } : { ok: true, code: 0, status: "OK", message: "", reply }),
        ),
      );
    },
    close() {
      for (const c of clients.values()) c.close();
    },
  };
}

export interface CsiProcess {
  proc: Subprocess;
  socket: string;
  client: CsiClient;
  log(): string;
  /** SIGTERM (or SIGKILL) and wait for exit. */
  stop(signal?: "SIGTERM" | "SIGKILL"): Promise<void>;
}

/**
 * Start `mcfs csi-controller` or `mcfs csi-node`; resolves once Probe answers ready. wrap runs it under
 * a program that execs it in place (e.g. `unshare -m`), so proc.pid is still the plugin's.
 */
export async function startCsi(role: "csi-controller" | "csi-node", base: string, name: string, args: string[], env: Record<string, string> = {}, wrap: string[] = []): Promise<CsiProcess> {
  const socket = join(base, `${name}.sock`);
  const logPath = join(base, `${name}.log`);
  if (!existsSync(logPath)) writeFileSync(logPath, "");
  const proc = spawn([...wrap, MCFS, role, "--endpoint", `unix://${socket}`, "--nodeid", name, ...args], {
    stdout: Bun.file(logPath),
    stderr: Bun.file(logPath),
    env: { ...process.env, ...env },
  });
  const log = () => readFileSync(logPath, "utf8");
  const client = csiClient(socket);
  const ready = async () => {
    if (proc.exitCode !== null) throw new Error(`${role} ${name} exited with ${proc.exitCode}:\n${log()}`);
    if (!existsSync(socket)) return false;
    const r = await client.call("Identity", "Probe");
    return r.ok && r.reply.ready?.value === true;
  };
  try {
    await waitFor(`${role} ${name} ready`, ready, 30_000);
  } catch (e) {
    proc.kill("SIGKILL");
    await proc.exited;
    client.close();
    throw e;
  }
  return {
    proc, socket, client, log,
    async stop(signal = "SIGTERM") {
      client.close();
      if (proc.exitCode === null) proc.kill(signal);
      await proc.exited;
    },
  };
}

/** The pid in a root path's daemon lock (the node daemon a csi-node started), if it is running. */
export function daemonPid(root: string): number | undefined {
  try {
    const pid = Number(readFileSync(join(root, ".mcfs/daemon.lock"), "utf8").trim());
    process.kill(pid, 0);
    return pid;
  } catch {
    return undefined;
  }
}

/** Stop the node daemon of a root path (not our child: wait until its pid is gone), and unmount. */
export async function stopNodeDaemon(root: string, mnt: string, signal: "SIGTERM" | "SIGKILL" = "SIGTERM"): Promise<void> {
  const pid = daemonPid(root);
  if (pid !== undefined) {
    process.kill(pid, signal);
    await waitFor(`node daemon ${pid} to exit`, () => {
      try {
        process.kill(pid, 0);
        return false;
      } catch {
        return true;
      }
    });
  }
  if (signal === "SIGTERM") forceUnmount(mnt);
}

/** A pod's target as kubelet hands it over: its parent exists, the target itself is the plugin's to make. */
export function podTarget(podsDir: string, node: string, pod: string): string {
  const p = join(podsDir, node, pod, "mount");
  mkdirSync(join(p, ".."), { recursive: true });
  return p;
}

/** How many mounts sit exactly at p in the mount namespace of pid. */
export function mountsIn(pid: number, p: string): number {
  return readFileSync(`/proc/${pid}/mountinfo`, "utf8").split("\n").filter((l) => l.split(" ")[4] === p).length;
}

export { freePort, isMounted };
