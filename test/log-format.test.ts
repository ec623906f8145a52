import { afterEach, describe, expect, test } from "bun:test";
import { existsSync, readFileSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { spawn, spawnSync, type Subprocess } from "bun";
import { fuseUnavailable, MCFS, tempDir, waitFor } from "./helpers/env.ts";
import { startRedis, type TestRedis } from "./helpers/redis.ts";
import { forceUnmount, isMounted } from "./helpers/daemon.ts";

/** Issue 12 item 6: pretty log lines on a terminal (also from the compiled binary), JSON elsewhere, and --log-format to choose. */
const skip = fuseUnavailable();

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
function temp(): string {
  const t = tempDir("logfmt");
  cleanups.push(() => t.remove());
  return t.path;
}
async function redis(): Promise<TestRedis> {
  const r = await startRedis();
  cleanups.push(() => r.stop());
  return r;
}

interface Run {
  proc: Subprocess;
  /** Everything written so far, without colour codes and carriage returns. */
  text(): string;
  /** As written, colour codes included. */
  raw(): string;
  /** SIGTERM to mcfs itself; resolves with its exit code. */
  stop(): Promise<number>;
}

const quote = (s: string) => `'${s.replaceAll("'", "'\\''")}'`;

/**
 * mcfs with stdout and stderr on a terminal (a pty of script(1), which exits with mcfs's code) or on a
 * file. Under script, the shell leaves its pid and execs mcfs: script's own SIGTERM handling would
 * SIGKILL mcfs after a moment, so mcfs is signalled directly.
 */
function mcfs(base: string, name: string, args: string[], tty: boolean): Run {
  const out = join(base, `${name}.out`);
  const pidFile = join(base, `${name}.pid`);
  writeFileSync(out, "");
  const cmd = tty ? ["script", "-qefc", `echo $$ >${quote(pidFile)}; exec ${[MCFS, ...args].map(quote).join(" ")}`, "/dev/null"] : [MCFS, ...args];
  const proc = spawn(cmd, { stdin: "ignore", stdout: Bun.file(out), stderr: tty ? "ignore" : Bun.file(out) });
  const raw = () => readFileSync(out, "utf8");
  const stop = async () => {
    if (proc.exitCode === null) {
      if (tty) await waitFor(`pid of ${name}`, () => existsSync(pidFile) && readFileSync(pidFile, "utf8").endsWith("\n"));
      process.kill(tty ? Number(readFileSync(pidFile, "utf8")) : proc.pid, "SIGTERM");
    }
    return proc.exited;
  };
  cleanups.push(stop);
  return { proc, raw, stop, text: () => raw().replace(/\x1b\[[0-9;]*m/g, "").replaceAll("\r", "") };
}

/** A pino-pretty line: "[HH:MM:SS.mmm] LEVEL (name): message". */
const prettyLine = (level: string, name: string, msg: string) => new RegExp(`^\\[\\d\\d:\\d\\d:\\d\\d\\.\\d{3}\\] ${level} \\(${name}\\): ${msg}$`, "m");
const jsonLines = (text: string) => text.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l) as { level: number; name: string; msg: string });

/** A daemon on the private Redis; resolves once mounted and the "mounted" line is out. */
async function daemon(base: string, name: string, more: string[], tty: boolean, mounted: (text: string) => boolean): Promise<Run> {
  const mnt = join(base, `${name}-mnt`);
  const r = mcfs(base, name, ["daemon", "-f", mnt, "-r", join(base, `${name}-root`), "-p", "0", "-i", "127.0.0.1", ...more], tty);
  cleanups.push(() => forceUnmount(mnt));
  await waitFor(`mount of ${mnt}`, () => {
    if (r.proc.exitCode !== null) throw new Error(`mcfs daemon exited with ${r.proc.exitCode}:\n${r.raw()}`);
    return isMounted(mnt) && mounted(r.text());
  });
  return r;
}

describe.skipIf(!!skip)("log format", () => {
  test("a daemon on a terminal logs pretty lines in colour, from start to stop", async () => {
    const base = temp();
    const d = await daemon(base, "n1", [], true, (t) => prettyLine("INFO", "mcfs", "mounted").test(t));
    expect(d.raw()).toContain("\x1b[32mINFO\x1b[39m");
    expect(await d.stop()).toBe(0);
    expect(d.text()).toMatch(prettyLine("INFO", "mcfs", "stopped and unmounted"));
    expect(d.text()).not.toMatch(/^\{/m);
  });

  test("--log-format json on a terminal gives JSON lines", async () => {
    const base = temp();
    const d = await daemon(base, "n1", ["--log-format", "json"], true, (t) => t.includes('"msg":"mounted"'));
    expect(await d.stop()).toBe(0);
    const lines = jsonLines(d.text());
    expect(lines.map((l) => l.msg)).toContain("stopped and unmounted");
    expect(lines.every((l) => l.name === "mcfs" && typeof l.level === "number")).toBe(true);
  });

  test("a fatal error on a terminal is printed before the exit", async () => {
    const base = temp();
    const file = join(base, "a-file");
    writeFileSync(file, "");
    const r = mcfs(base, "bad-root", ["daemon", "-f", join(base, "m"), "-r", file], true);
    expect(await r.proc.exited).toBe(1);
    expect(r.text()).toMatch(prettyLine("ERROR", "mcfs", "ENOTDIR: not a directory, mkdir .*"));
  });

  test("elsewhere JSON by default, and --log-format pretty gives pretty lines without colour", async () => {
    const base = temp();
    const file = join(base, "a-file");
    writeFileSync(file, "");
    const args = ["daemon", "-f", join(base, "m"), "-r", file];
    const json = mcfs(base, "json", args, false);
    expect(await json.proc.exited).toBe(1);
    expect(jsonLines(json.raw())).toEqual([expect.objectContaining({ level: 50, name: "mcfs", msg: expect.stringContaining("ENOTDIR") })]);
    const pretty = mcfs(base, "pretty", [...args, "--log-format", "pretty"], false);
    expect(await pretty.proc.exited).toBe(1);
    expect(pretty.raw()).toMatch(prettyLine("ERROR", "mcfs", "ENOTDIR: .*"));
    expect(pretty.raw()).not.toContain("\x1b[");
  });

  test("csi-controller: pretty on a terminal, JSON with --log-format json", async () => {
    const base = temp();
    const r = await redis();
    const args = (name: string) => ["csi-controller", "--endpoint", `unix://${join(base, `${name}.sock`)}`, "--nodeid", name, "-u", r.url];
    const pretty = mcfs(base, "pretty", args("pretty"), true);
    await waitFor("serving CSI", () => prettyLine("INFO", "mcfs", "serving CSI").test(pretty.text()));
    const json = mcfs(base, "json", [...args("json"), "--log-format", "json"], true);
    await waitFor("serving CSI", () => json.text().includes('"msg":"serving CSI"'));
    expect([await pretty.stop(), await json.stop()]).toEqual([0, 0]);
    expect(jsonLines(json.text()).length).toBeGreaterThan(0);
  });

  test("a bad --log-format is named, with the choices, by every command that logs", () => {
    const base = temp();
    const url = "redis://127.0.0.1:1";
    for (const args of [
      ["daemon", "-f", join(base, "m"), "-r", join(base, "r")],
      ["csi-controller", "-u", url],
      ["csi-node", "-u", url],
      ["status", "-u", url],
      ["fsck", "-u", url],
      ["node", "forget", "n1", "-u", url],
    ]) {
      const p = spawnSync([MCFS, ...args, "--log-format", "xml"], { stdout: "pipe", stderr: "pipe", timeout: 30_000 });
      expect({ args, code: p.exitCode }).toEqual({ args, code: 2 });
      expect(p.stderr.toString()).toContain('Argument: log-format, Given: "xml", Choices: "auto", "json", "pretty"');
    }
  });
});
