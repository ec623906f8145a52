/**
 * GlusterFS 10 (Debian's glusterfs-server) as the reference for the cross-node cases: a private glusterd
 * whose state, CLI socket and pid files live under the bench's work dir, one plain distribute volume of
 * two bricks on this machine, and one FUSE client per mcfs node (`glusterfs -N`, so each is our child).
 * What glusterd cannot be told: it starts the bricks (glusterfsd) without a port, so they fetch their
 * volfile from 24007 and glusterd must listen there; and each brick puts its unix socket in
 * /var/run/gluster and its log in /var/log/glusterfs/bricks, so stop() removes those two files.
 */
import { spawn, spawnSync, type Subprocess } from "bun";
import * as fs from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { alive, cmdline, mounted, until } from "./sys.ts";

const PATH = `${process.env.PATH ?? ""}:/usr/sbin:/sbin`;
const which = (cmd: string) => Bun.which(cmd, { PATH });
const VOLUME = "mcfsbench";
/** Where every brick fetches its volfile: glusterfsd's default, which glusterd does not override. */
const GLUSTERD_PORT = 24007;

export interface Gluster {
  /** One mount point per client, in the order asked for. */
  clients: string[];
  /** Unmount the clients, stop and delete the volume, stop glusterd and the bricks. Safe to call twice. */
  stop(): Promise<void>;
}

function listening(port: number): boolean {
  const hex = `:${port.toString(16).toUpperCase().padStart(4, "0")}`;
  // /proc/net/tcp{,6}: local address is column 2 ("0100007F:5DB7"), state 0A is LISTEN.
  return ["/proc/net/tcp", "/proc/net/tcp6"].some((f) => {
    try {
      return fs.readFileSync(f, "utf8").split("\n").slice(1).some((l) => {
        const c = l.trim().split(/\s+/);
        return c[1]?.endsWith(hex) && c[3] === "0A";
      });
    } catch {
      return false;
    }
  });
}

/** "10.3", from `glusterfs --version`. */
export function glusterVersion(): string {
  return spawnSync([which("glusterfs") ?? "glusterfs", "--version"]).stdout.toString().match(/glusterfs (\S+)/)?.[1] ?? "(version unknown)";
}

/** Why GlusterFS cannot be measured here (after installing it if it is missing), or undefined when it can. */
export function glusterUnavailable(): string | undefined {
  if (!which("glusterd")) {
    console.error("bench: glusterd is missing, running apt-get install -y glusterfs-server");
    const r = spawnSync(["apt-get", "install", "-y", "glusterfs-server"], {
      env: { ...process.env, DEBIAN_FRONTEND: "noninteractive" }, stdout: "ignore", stderr: "pipe", timeout: 600_000,
    });
    if (!which("glusterd")) return `glusterfs-server could not be installed (apt-get exit ${r.exitCode ?? r.signalCode}: ${r.stderr.toString().trim().split("\n").pop()})`;
  }
  for (const cmd of ["gluster", "glusterfs"]) if (!which(cmd)) return `${cmd} is missing although glusterd is installed`;
  if (listening(GLUSTERD_PORT)) return `port ${GLUSTERD_PORT} is taken (another glusterd?), and the bricks can only reach glusterd there`;
  return undefined;
}

/** The files a brick process keeps outside the work dir: its -S socket and its -l log. */
export function brickFiles(argv: string[]): string[] {
  if (!argv.includes("--brick-name")) return [];
  return ["-S", "-l"].flatMap((o) => {
    const i = argv.indexOf(o);
    return i > 0 && argv[i + 1] ? [argv[i + 1]!] : [];
  });
}

async function exitWithin(p: Subprocess, ms: number): Promise<void> {
  const t = setTimeout(() => p.kill("SIGKILL"), ms);
  await p.exited;
  clearTimeout(t);
}

/** The last error lines of a gluster log, for a failure message. */
function logErrors(log: string): string {
  try {
    return fs.readFileSync(log, "utf8").split("\n").filter((l) => /\] [EC] \[/.test(l)).slice(-3).join(" / ");
  } catch {
    return "";
  }
}

/** A private glusterd under dir, a started 2-brick distribute volume, and `clients` FUSE mounts of it. */
export async function startGluster(dir: string, clients: number): Promise<Gluster> {
  const [state, run, logs] = ["state", "run", "logs"].map((d) => join(dir, d)) as [string, string, string];
  for (const d of [state, run, logs]) fs.mkdirSync(d, { recursive: true });
  const sock = join(run, "glusterd.socket");
  const volfile = join(dir, "glusterd.vol");
  // Debian's /etc/glusterfs/glusterd.vol with the state (working-directory), the run dir and the CLI socket moved here.
  fs.writeFileSync(volfile, `volume management
    type mgmt/glusterd
    option working-directory ${state}
    option run-directory ${run}
    option glusterd-sockfile ${sock}
    option transport-type socket
    option transport.socket.keepalive-time 10
    option transport.socket.keepalive-interval 2
    option transport.socket.read-fail-log off
    option transport.socket.listen-port ${GLUSTERD_PORT}
    option ping-timeout 0
    option event-threads 1
    option max-port 60999
end-volume
`);
  const glusterdLog = join(logs, "glusterd.log");
  const glusterd = spawn([which("glusterd")!, "-N", "-f", volfile, "-p", join(run, "glusterd.pid"), "-l", glusterdLog], { stdout: "ignore", stderr: "ignore" });
  const cli = (...args: string[]) => {
    const r = spawnSync([which("gluster")!, "--mode=script", `--glusterd-sock=${sock}`, `--log-file=${join(logs, "cli.log")}`, ...args], { stdout: "pipe", stderr: "pipe", timeout: 120_000 });
    if (r.exitCode !== 0) throw new Error(`gluster ${args.join(" ")}: ${(r.stderr.toString() + r.stdout.toString()).trim() || `exit ${r.exitCode ?? r.signalCode}`} ${logErrors(glusterdLog)}`);
  };
  // The host must name this machine: gluster refuses "localhost" in a brick, and decides which bricks are its own by resolving it.
  const host = hostname();
  const bricks = [1, 2].map((i) => join(dir, `brick${i}`));
  const mounts: string[] = [];
  const clientProcs: Subprocess[] = [];
  let volume: "none" | "created" | "started" = "none";
  let stopping: Promise<void> | undefined;
  const brickPids = () => {
    const pids = join(run, "vols", VOLUME);
    return fs.existsSync(pids) ? fs.readdirSync(pids).filter((f) => f.endsWith(".pid")).map((f) => Number(fs.readFileSync(join(pids, f), "utf8").trim())).filter((n) => n > 0) : [];
  };
  const teardown = async () => {
    const errors: string[] = [];
    const step = async (what: string, fn: () => unknown) => {
      try {
        await fn();
      } catch (e) {
        errors.push(`${what}: ${(e as Error).message}`);
      }
    };
    for (const [i, m] of mounts.entries()) {
      await step(`unmount ${m}`, async () => {
        if (mounted(m) && spawnSync(["umount", m]).exitCode !== 0) spawnSync(["umount", "-l", m]);
        // Unmounted, the client process ends by itself.
        if (clientProcs[i]) await exitWithin(clientProcs[i]!, 10_000);
      });
    }
    // Read before the bricks go: their sockets and logs lie outside dir.
    const pids = brickPids();
    const outside = pids.flatMap((p) => brickFiles(cmdline(p)));
    if (volume === "started") await step("volume stop", () => cli("volume", "stop", VOLUME));
    if (volume !== "none") await step("volume delete", () => cli("volume", "delete", VOLUME));
    for (const p of pids) {
      if (alive(p)) {
        errors.push(`brick ${p} outlived volume stop: killed`);
        process.kill(p, "SIGKILL");
      }
    }
    glusterd.kill("SIGTERM");
    await exitWithin(glusterd, 10_000);
    for (const f of outside) fs.rmSync(f, { force: true });
    if (errors.length) console.error(`bench: GlusterFS teardown: ${errors.join("; ")}`);
  };
  const stop = () => (stopping ??= teardown());
  try {
    await until("glusterd's CLI socket", () => fs.existsSync(sock) || glusterd.exitCode !== null);
    if (glusterd.exitCode !== null) throw new Error(`glusterd exited with ${glusterd.exitCode}: ${logErrors(glusterdLog)}`);
    cli("volume", "create", VOLUME, ...bricks.map((b) => `${host}:${b}`), "force");
    volume = "created";
    cli("volume", "start", VOLUME);
    volume = "started";
    for (let i = 0; i < clients; i++) {
      const m = join(dir, `client-${String.fromCharCode(97 + i)}`);
      fs.mkdirSync(m);
      mounts.push(m);
      const log = join(logs, `client-${i}.log`);
      const p = spawn([which("glusterfs")!, "-N", `--volfile-server=${host}`, `--volfile-id=${VOLUME}`, "-l", log, m], { stdout: "ignore", stderr: "ignore" });
      clientProcs.push(p);
      await until(`GlusterFS client ${m}`, () => mounted(m) || p.exitCode !== null);
      if (p.exitCode !== null) throw new Error(`GlusterFS client exited with ${p.exitCode}: ${logErrors(log)}`);
    }
  } catch (e) {
    await stop();
    throw e;
  }
  return { clients: mounts, stop };
}
