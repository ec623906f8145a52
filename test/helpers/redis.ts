import { spawn } from "bun";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { freePort, tempDir, waitFor } from "./env.ts";

export interface TestRedis {
  url: string;
  pid: number;
  stop(): Promise<void>;
  /** Run a redis-cli command against it. */
  cli(...args: string[]): Promise<string>;
  /** Freeze it (SIGSTOP; resolves once stopped): connections stay open, nothing answers. */
  pause(): Promise<void>;
  /** Bytes clients sent that it has not read yet (its end of each connection, by ss). */
  unread(): Promise<number>;
  resume(): Promise<void>;
  /** Its data directory (dump.rdb goes there on SAVE). */
  readonly dir: string;
  /**
   * kill -9, let prepare change the data directory (or act while Redis is down), start again on the
   * same socket, with args added to its command line.
   */
  restart(prepare?: (dir: string) => void | Promise<void>, args?: string[]): Promise<void>;
}

/** A real redis-server on a unix socket in a temp dir (no TCP port). */
export async function startRedis(): Promise<TestRedis> {
  const dir = tempDir("redis");
  const sock = join(dir.path, "redis.sock");
  const launch = async (args: string[] = []) => {
    const p = spawn(["redis-server", "--port", "0", "--unixsocket", sock, "--save", "", "--appendonly", "no", "--dir", dir.path, ...args], { stdout: "ignore", stderr: "ignore" });
    await waitFor("redis socket", () => existsSync(sock) || p.exitCode !== null);
    if (p.exitCode !== null) throw new Error("redis-server exited at start");
    return p;
  };
  let proc = await launch();
  const cli = async (...args: string[]) => {
    const p = spawn(["redis-cli", "-s", sock, ...args], { stdout: "pipe", stderr: "pipe" });
    const out = await new Response(p.stdout).text();
    await p.exited;
    return out.trim();
  };
  await waitFor("redis ping", async () => (await cli("ping")) === "PONG");
  return {
    url: `unix://${sock}`,
    get pid() {
      return proc.pid;
    },
    dir: dir.path,
    cli,
    async restart(prepare, args) {
      proc.kill("SIGKILL");
      await proc.exited;
      rmSync(sock, { force: true });
      await prepare?.(dir.path);
      proc = await launch(args);
      await waitFor("redis ping", async () => (await cli("ping")) === "PONG");
    },
    async pause() {
      proc.kill("SIGSTOP");
      await waitFor("redis stopped", () => readFileSync(`/proc/${proc.pid}/stat`, "utf8").split(") ")[1]?.startsWith("T") ?? false);
    },
    async unread() {
      const p = spawn(["ss", "-xnH"], { stdout: "pipe" });
      const out = await new Response(p.stdout).text();
      await p.exited;
      // Netid State Recv-Q Send-Q Local Peer: the server's end of a connection names the socket's path.
      return out.split("\n").map((l) => l.trim().split(/\s+/)).filter((f) => f[4] === sock).reduce((n, f) => n + Number(f[2] ?? 0), 0);
    },
    async resume() {
      proc.kill("SIGCONT");
    },
    async stop() {
      proc.kill("SIGKILL");
      await proc.exited;
      dir.remove();
    },
  };
}

/**
 * Start a redis-server (start(port): the process and its log file) on a port freePort() found, and
 * wait for its PONG. Another process may take the port between the two: then the server exits, and
 * this tries again on another port (its log names why, if it never starts).
 */
async function listenOnFreePort(start: (port: number) => { proc: ReturnType<typeof spawn>; logfile: string }, cliAt: (port: number, ...args: string[]) => Promise<string>): Promise<{ port: number; proc: ReturnType<typeof spawn> }> {
  let log = "";
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const { proc, logfile } = start(port);
    await waitFor(`redis on ${port}`, async () => proc.exitCode !== null || (await cliAt(port, "ping")) === "PONG");
    if (proc.exitCode === null) return { port, proc };
    log = existsSync(logfile) ? readFileSync(logfile, "utf8").slice(-2000) : "(no log)";
  }
  throw new Error(`redis-server did not start on any of 5 free ports; its last log:\n${log}`);
}

/** start() for listenOnFreePort: redis-server with these arguments in a directory of its own under parent. */
function serverIn(parent: string, args: (port: number) => string[]) {
  return (port: number) => {
    const d = join(parent, `r${port}`);
    mkdirSync(d, { recursive: true });
    const logfile = join(d, "redis.log");
    return { proc: spawn(["redis-server", ...args(port), "--dir", d, "--logfile", logfile], { stdout: "ignore", stderr: "ignore" }), logfile };
  };
}

export interface TestSentinels {
  /** redis+sentinel:// URL of the group (query appended by the caller). */
  url: string;
  master: string;
  /** Port of the server the sentinels now name as master. */
  masterPort(): Promise<number>;
  /** redis-cli against one of the group's ports. */
  cliAt(port: number, ...args: string[]): Promise<string>;
  /** kill -9 the server on this port (it stays down). */
  kill(port: number): Promise<void>;
  sentinelPorts: number[];
  /** What each sentinel logged (the steps of a failover), for a failure seen only in CI. */
  sentinelLogs(): string;
  /** The switches of master the sentinels have logged so far ("old -> new" ports), each once, from its promotion on. */
  switches(): Set<string>;
  stop(): Promise<void>;
}

/**
 * A master with replicas and three sentinels on 127.0.0.1 (sentinels need TCP: they announce
 * themselves and the servers by address). Failures are seen after one second. sentinelPassword: the
 * sentinels' own requirepass (they use it among themselves too).
 */
export async function startSentinels(replicas = 2, master = "mcfs", tls?: { cert: string; key: string; ca: string }, sentinelPassword?: string): Promise<TestSentinels> {
  const dir = tempDir("sentinel");
  const procs = new Map<number, ReturnType<typeof spawn>>();
  // With tls: every server and sentinel speaks TLS only (replication and sentinel links too).
  const tlsArgs = tls ? ["--tls-cert-file", tls.cert, "--tls-key-file", tls.key, "--tls-ca-cert-file", tls.ca, "--tls-auth-clients", "no", "--tls-replication", "yes"] : [];
  const portArgs = (port: number) => (tls ? ["--port", "0", "--tls-port", String(port)] : ["--port", String(port)]);
  const sentinelPorts: number[] = [];
  const cliAt = async (port: number, ...args: string[]) => {
    const auth = sentinelPassword && sentinelPorts.includes(port) ? ["-a", sentinelPassword, "--no-auth-warning"] : [];
    const p = spawn(["redis-cli", ...(tls ? ["--tls", "--cacert", tls.ca] : []), ...auth, "-p", String(port), ...args], { stdout: "pipe", stderr: "pipe" });
    const out = await new Response(p.stdout).text();
    await p.exited;
    return out.trim();
  };
  const server = async (...extra: string[]) => {
    const { port, proc } = await listenOnFreePort(serverIn(dir.path, (port) => [...portArgs(port), ...tlsArgs, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", ...extra]), cliAt);
    procs.set(port, proc);
    return port;
  };
  const masterPort = await server();
  for (let i = 0; i < replicas; i++) await server("--replicaof", "127.0.0.1", String(masterPort));
  await waitFor("replicas in sync", async () => ((await cliAt(masterPort, "info", "replication")).match(/state=online/g)?.length ?? 0) === replicas, 30_000);
  const sentinel = (port: number) => {
    const conf = join(dir.path, `sentinel-${port}.conf`);
    const logfile = join(dir.path, `sentinel-${port}.log`);
    const tlsConf = tls ? ["port 0", `tls-port ${port}`, `tls-cert-file ${tls.cert}`, `tls-key-file ${tls.key}`, `tls-ca-cert-file ${tls.ca}`, "tls-auth-clients no", "tls-replication yes"] : [`port ${port}`];
    writeFileSync(conf, [...tlsConf, "bind 127.0.0.1", `dir ${dir.path}`, `sentinel monitor ${master} 127.0.0.1 ${masterPort} 2`, `sentinel down-after-milliseconds ${master} 1000`, `sentinel failover-timeout ${master} 5000`, `logfile ${logfile}`, ...(sentinelPassword ? [`requirepass ${sentinelPassword}`, `sentinel sentinel-pass ${sentinelPassword}`] : []), ""].join("\n"));
    return { proc: spawn(["redis-server", conf, "--sentinel"], { stdout: "ignore", stderr: "ignore" }), logfile };
  };
  // The sentinel's own cliAt sends its password: its PING is checked with the password in hand.
  const sentinelCli = (port: number, ...args: string[]) => (sentinelPassword ? cliAt(port, "-a", sentinelPassword, "--no-auth-warning", ...args) : cliAt(port, ...args));
  for (let i = 0; i < 3; i++) {
    const { port, proc } = await listenOnFreePort(sentinel, sentinelCli);
    sentinelPorts.push(port);
    procs.set(port, proc);
  }
  // Ready for a failover: every sentinel knows the replicas and the other two sentinels.
  for (const s of sentinelPorts) {
    await waitFor(`sentinel ${s} sees the group`, async () => {
      const others = await cliAt(s, "sentinel", "sentinels", master);
      const reps = await cliAt(s, "sentinel", "replicas", master);
      return (others.match(/^name$/gm)?.length ?? 0) === 2 && (reps.match(/^name$/gm)?.length ?? 0) === replicas;
    }, 30_000);
  }
  const group: TestSentinels = {
    url: `${tls ? "rediss" : "redis"}+sentinel://${sentinelPorts.map((p) => `127.0.0.1:${p}`).join(",")}/${master}`,
    master,
    sentinelPorts,
    cliAt,
    async masterPort() {
      for (const s of sentinelPorts) {
        const out = (await cliAt(s, "sentinel", "get-master-addr-by-name", master)).split("\n");
        if (out.length === 2) return Number(out[1]);
      }
      throw new Error("no sentinel answers");
    },
    sentinelLogs() {
      return sentinelPorts.map((p) => `sentinel ${p}:\n${readFileSync(join(dir.path, `sentinel-${p}.log`), "utf8")}`).join("\n");
    },
    switches() {
      const logs = group.sentinelLogs();
      // The leader logs the promotion at once, every sentinel the switch at the failover's end.
      const promoted = [...logs.matchAll(/\+promoted-slave slave \S+ \S+ (\d+) @ \S+ \S+ (\d+)/g)].map((m) => `${m[2]} -> ${m[1]}`);
      const switched = [...logs.matchAll(/\+switch-master \S+ \S+ (\d+) \S+ (\d+)/g)].map((m) => `${m[1]} -> ${m[2]}`);
      return new Set([...promoted, ...switched]);
    },
    async kill(port) {
      const p = procs.get(port);
      p?.kill("SIGKILL");
      await p?.exited;
    },
    async stop() {
      for (const p of procs.values()) {
        p.kill("SIGKILL");
        await p.exited;
      }
      dir.remove();
    },
  };
  return group;
}

export interface TestRedisCluster {
  /** redis+cluster:// URL naming every primary. */
  url: string;
  ports: number[];
  cliAt(port: number, ...args: string[]): Promise<string>;
  /** kill -9 the server on this port (it stays down). */
  kill(port: number): Promise<void>;
  stop(): Promise<void>;
}

/**
 * Three primaries on 127.0.0.1, each with replicasEach replicas, joined with redis-cli --cluster
 * create. A primary is held failed after one second without an answer.
 */
export async function startRedisCluster(replicasEach = 0): Promise<TestRedisCluster> {
  const dir = tempDir("rcluster");
  const procs: ReturnType<typeof spawn>[] = [];
  const ports: number[] = [];
  const cliAt = async (port: number, ...args: string[]) => {
    const p = spawn(["redis-cli", "-p", String(port), ...args], { stdout: "pipe", stderr: "pipe" });
    const out = await new Response(p.stdout).text();
    await p.exited;
    return out.trim();
  };
  const stop = async () => {
    for (const p of procs) {
      p.kill("SIGKILL");
      await p.exited;
    }
    dir.remove();
  };
  try {
    for (let i = 0; i < 3 * (1 + replicasEach); i++) {
      // The cluster bus gets a port of its own: port + 10000, the default, may be taken or past 65535.
      const busPort = await freePort();
      const { port, proc } = await listenOnFreePort(serverIn(dir.path, (port) => ["--port", String(port), "--cluster-port", String(busPort), "--bind", "127.0.0.1", "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "1000", "--save", "", "--appendonly", "no"]), cliAt);
      procs.push(proc);
      ports.push(port);
    }
    const create = spawn(["redis-cli", "--cluster", "create", ...ports.map((p) => `127.0.0.1:${p}`), "--cluster-replicas", String(replicasEach), "--cluster-yes"], { stdout: "pipe", stderr: "pipe" });
    const out = await new Response(create.stdout).text();
    if ((await create.exited) !== 0) throw new Error(`redis-cli --cluster create failed: ${out}`);
    for (const p of ports) await waitFor(`cluster state ok on ${p}`, async () => (await cliAt(p, "cluster", "info")).includes("cluster_state:ok"), 30_000);
  } catch (e) {
    await stop();
    throw e;
  }
  return {
    url: `redis+cluster://${ports.map((p) => `127.0.0.1:${p}`).join(",")}`,
    ports,
    cliAt,
    stop,
    async kill(port) {
      const p = procs[ports.indexOf(port)];
      p?.kill("SIGKILL");
      await p?.exited;
    },
  };
}
