import { spawn, type Subprocess } from "bun";
import { mkdirSync, existsSync } from "node:fs";
import { join } from "node:path";
import { createConnection } from "node:net";

export interface EmbeddedRedis {
  url: string;
  /** The running redis-server's (a new one after each restart). */
  readonly pid: number;
  stop(): Promise<void>;
}

export interface EmbeddedRedisOptions {
  /** It exited on its own (code, or the signal that ended it) and was started again (pid), or could not be (err). */
  onRestart?: (e: { code: number | null; signal: string | null; pid?: number; err?: string }) => void;
}

function which(cmd: string): string | undefined {
  for (const d of (process.env.PATH ?? "/usr/bin:/bin").split(":")) {
    const p = join(d, cmd);
    if (existsSync(p)) return p;
  }
  for (const d of ["/usr/bin", "/usr/sbin", "/usr/local/bin"]) if (existsSync(join(d, cmd))) return join(d, cmd);
  return undefined;
}

/** True once Redis answers PING with PONG (not LOADING while it replays its AOF). */
function answersPing(path: string): Promise<boolean> {
  return new Promise((res) => {
    const s = createConnection({ path }, () => s.write("PING\r\n"));
    s.once("data", (d) => {
      s.destroy();
      res(d.toString().startsWith("+PONG"));
    });
    s.on("error", () => res(false));
  });
}

/**
 * A private redis-server owned by this daemon: unix socket only (no TCP port), data kept with AOF in
 * dataDir so a restart finds the namespace again. Stopped with the daemon; started under
 * `setpriv --pdeathsig KILL` where available so that a crashed daemon leaves no orphan behind. One
 * that exits on its own (killed, out of memory) is started again on the same data, pausing longer
 * each time it keeps failing: the daemon's connection comes back, and its check for lost writes runs.
 */
export async function startEmbeddedRedis(dataDir: string, o: EmbeddedRedisOptions = {}): Promise<EmbeddedRedis> {
  const bin = which("redis-server");
  if (!bin) throw new Error("no -u/--redis_url given and redis-server is not installed (apt-get install redis-server), so there is no Redis to use");
  mkdirSync(dataDir, { recursive: true, mode: 0o700 });
  const sock = join(dataDir, "redis.sock");
  const setpriv = which("setpriv");
  const launch = async (): Promise<Subprocess> => {
    const proc: Subprocess = spawn([...(setpriv ? [setpriv, "--pdeathsig", "KILL", "--"] : []), bin, "--port", "0", "--unixsocket", sock, "--unixsocketperm", "700", "--dir", dataDir,
      "--appendonly", "yes", "--appendfsync", "everysec", "--save", "", "--daemonize", "no", "--protected-mode", "yes", "--loglevel", "warning", "--logfile", join(dataDir, "redis.log")], {
      stdin: "ignore", stdout: "ignore", stderr: "pipe",
    });
    const deadline = Date.now() + 120_000;
    for (;;) {
      if (proc.exitCode !== null) throw new Error(`redis-server exited at start (code ${proc.exitCode}); see ${join(dataDir, "redis.log")}`);
      if (existsSync(sock) && (await answersPing(sock))) return proc;
      if (Date.now() > deadline) {
        proc.kill();
        throw new Error(`redis-server did not answer on ${sock} within 120 s`);
      }
      await Bun.sleep(20);
    }
  };
  let proc = await launch();
  let stopping = false;
  let failures = 0;
  const watch = (p: Subprocess) => {
    void p.exited.then(async (code) => {
      while (!stopping) {
        // 0.1 s after a first exit, up to 10 s while it keeps failing.
        await Bun.sleep(Math.min(10_000, 100 * 2 ** Math.min(failures++, 7)));
        if (stopping) return;
        try {
          proc = await launch();
          // Stopped while it started: it goes too.
          if (stopping) return void proc.kill("SIGTERM");
          o.onRestart?.({ code, signal: p.signalCode === null ? null : String(p.signalCode), pid: proc.pid });
          failures = 0;
          watch(proc);
          return;
        } catch (e) {
          o.onRestart?.({ code, signal: p.signalCode === null ? null : String(p.signalCode), err: (e as Error).message });
        }
      }
    });
  };
  watch(proc);
  return {
    url: `unix://${sock}`,
    get pid() {
      return proc.pid;
    },
    async stop() {
      stopping = true;
      if (proc.exitCode !== null) return;
      proc.kill("SIGTERM");
      const t = setTimeout(() => proc.kill("SIGKILL"), 10_000);
      await proc.exited;
      clearTimeout(t);
    },
  };
}
