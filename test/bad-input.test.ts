import { afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import { spawn, spawnSync } from "bun";
import { fuseUnavailable, MCFS, tempDir, waitFor } from "./helpers/env.ts";
import { startRedis, type TestRedis } from "./helpers/redis.ts";
import { forceUnmount, isMounted, startDaemon, type TestDaemon } from "./helpers/daemon.ts";
import { startCsi, type CallResult } from "./helpers/csi.ts";

/** Issue 11 item 6: every bad input gets its clear error and leaves nothing behind. */
const skip = fuseUnavailable();

const cleanups: (() => Promise<unknown> | unknown)[] = [];
afterEach(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
});
function temp(tag: string): string {
  const t = tempDir(tag);
  cleanups.push(() => t.remove());
  return t.path;
}
async function redis(): Promise<TestRedis> {
  const r = await startRedis();
  cleanups.push(() => r.stop());
  return r;
}
async function daemon(spec: Parameters<typeof startDaemon>[0]): Promise<TestDaemon> {
  const d = await startDaemon(spec);
  cleanups.push(() => d.stop());
  return d;
}
const run = (args: string[]) => {
  const p = spawnSync([MCFS, ...args], { stdout: "pipe", stderr: "pipe", timeout: 60_000 });
  return { code: p.exitCode, err: p.stderr.toString() };
};

/** The command line of each role that connects to Redis, given its Redis URL. */
const roles = (base: string): [string, (url: string, ...more: string[]) => string[]][] => [
  ["daemon", (url, ...more) => ["daemon", "-f", join(base, "m"), "-r", join(base, "r"), "-u", url, "--insecure", ...more]],
  ["csi-controller", (url, ...more) => ["csi-controller", "--endpoint", `unix://${join(base, "c.sock")}`, "--redis-url", url, ...more]],
  ["status", (url, ...more) => ["status", "-u", url, ...more]],
];

describe.skipIf(!!skip)("a bad Redis URL names the flag and what is wrong", () => {
  const cases: [url: string, mentions: string[]][] = [
    ["redis://127.0.0.1:99999", ["99999", "port"]],
    ["redis://127.0.0.1:63x79", ["63x79", "port"]],
    ["rediss://user:s3cret@redis.example:70000/0", ["70000", "port"]],
    ["redis://[::1:6379", ["not a valid URL"]],
  ];
  for (const [url, mentions] of cases)
    test(url, () => {
      const base = temp("badurl");
      for (const [role, argv] of roles(base)) {
        const p = run(argv(url));
        expect({ role, code: p.code }).toEqual({ role, code: 2 });
        expect(p.err).toMatch(/--redis[-_]url/);
        for (const m of mentions) expect(p.err).toContain(m);
        expect(p.err).not.toContain("s3cret");
        expect(isMounted(join(base, "m"))).toBe(false);
      }
    });
});

describe.skipIf(!!skip)("--require-namespace", () => {
  test("a daemon told to find its filesystem refuses an empty Redis, says why, mounts nothing and makes no key; a filesystem that exists it serves", async () => {
    const base = temp("reqns");
    const r = await redis();
    const p = run(["daemon", "-f", join(base, "m"), "-r", join(base, "r"), "-u", r.url, "--insecure", "--require-namespace"]);
    expect(p.code).toBe(1);
    expect(p.err).toContain("--require-namespace");
    expect(isMounted(join(base, "m"))).toBe(false);
    expect(spawnSync(["redis-cli", "-s", r.url.slice("unix://".length), "dbsize"]).stdout.toString().trim()).toBe("0");
    await daemon({ base, name: "maker", redisUrl: r.url });
    const d = await daemon({ base, name: "joiner", redisUrl: r.url, args: ["--require-namespace"] });
    expect(fs.readdirSync(d.mnt)).toEqual([]);
  });
});

describe.skipIf(!!skip)("a Redis that refuses the credentials is named", () => {
  test("NOAUTH and WRONGPASS name the Redis address, never the password", async () => {
    const base = temp("auth");
    const sock = join(base, "redis.sock");
    const srv = spawn(["redis-server", "--port", "0", "--unixsocket", sock, "--requirepass", "the-real-one", "--save", "", "--appendonly", "no", "--dir", base], { stdout: "ignore", stderr: "ignore" });
    cleanups.push(async () => {
      srv.kill("SIGKILL");
      await srv.exited;
    });
    await waitFor("redis socket", () => fs.existsSync(sock));
    fs.writeFileSync(join(base, "wrong"), "not-the-password\n", { mode: 0o600 });
    const url = `unix://${sock}`;
    for (const [role, argv] of roles(base)) {
      for (const [more, answer] of [[[], "NOAUTH"], [["--redis-password-file", join(base, "wrong")], "WRONGPASS"]] as const) {
        const p = run(argv(url, ...more));
        expect({ role, answer, code: p.code }).toEqual({ role, answer, code: 1 });
        expect({ role, answer, names: p.err.includes(sock) }).toEqual({ role, answer, names: true });
        expect(p.err).toContain(answer);
        expect(p.err).not.toContain("not-the-password");
      }
    }
    forceUnmount(join(base, "m"));
  });
});

describe.skipIf(!!skip)("a failed start leaves no node record behind", () => {
  /** Flags that make the start fail, over those of a start that works. */
  const failures: [what: string, flags: (other: TestDaemon, base: string) => Record<string, string>][] = [
    ["its peer port is in use", (other) => ({ "-p": String(other.port) })],
    ["its mount path is a file", (_, base) => {
      fs.writeFileSync(join(base, "not-a-dir"), "");
      return { "-f": join(base, "not-a-dir") };
    }],
  ];
  for (const known of [false, true])
    for (const [what, args] of failures)
      test(`${known ? "a known node" : "a new node"}: ${what}`, async () => {
        const base = temp("failstart");
        const r = await redis();
        const other = await daemon({ base, name: "other", redisUrl: r.url });
        if (known) {
          const once = await startDaemon({ base, name: "b", redisUrl: r.url });
          expect(await once.stop()).toBe(0);
        }
        const records = async () => ({ nodes: await r.cli("HGETALL", "mcfs:nodes"), seen: (await r.cli("HKEYS", "mcfs:seen")).split("\n").sort(), beats: (await r.cli("KEYS", "mcfs:hb:*")).split("\n").sort() });
        const before = await records();
        const mnt = join(base, "b-mnt");
        const flags = { "-f": mnt, "-r": join(base, "b-root"), "-i": "127.0.0.1", "-p": "0", "-u": r.url, "--cluster-secret-file": join(base, "cluster-secret"), ...args(other, base) };
        const p = run(["daemon", ...Object.entries(flags).flat()]);
        forceUnmount(mnt);
        expect(p.code).toBe(1);
        expect(await records()).toEqual(before);
        // The node that was there goes on serving under its own address.
        expect(await r.cli("HGETALL", "mcfs:nodes")).toContain(`127.0.0.1:${other.port}`);
        fs.writeFileSync(join(other.mnt, "still"), "works");
        expect(fs.readFileSync(join(other.mnt, "still"), "utf8")).toBe("works");
      });
});

describe.skipIf(!!skip)("full disk on the node that writes", () => {
  test("appending on a full node to a file another node holds gives ENOSPC and leaves no partial copy", async () => {
    const base = temp("fullappend");
    const r = await redis();
    const a = await daemon({ base, name: "holder", redisUrl: r.url });
    const root = join(base, "small-root");
    fs.mkdirSync(root);
    expect(spawnSync(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", root]).exitCode).toBe(0);
    cleanups.push(() => spawnSync(["umount", "-l", root]));
    const b = await daemon({ base, name: "full", redisUrl: r.url, root });
    const body = Buffer.alloc(2 << 20, 5);
    fs.writeFileSync(join(a.mnt, "big"), body);
    await waitFor("the file on the full node", () => fs.existsSync(join(b.mnt, "big")));
    let code: string | undefined;
    try {
      fs.appendFileSync(join(b.mnt, "big"), "more");
    } catch (e) {
      code = (e as NodeJS.ErrnoException).code;
    }
    expect(code).toBe("ENOSPC");
    expect(fs.readdirSync(root).filter((n) => n !== ".mcfs")).toEqual([]);
    expect(fs.readFileSync(join(a.mnt, "big")).equals(body)).toBe(true);
  });
});

/**
 * A TCP proxy to a unix-socket Redis that can reset (RST) the next connection that sends a command
 * naming what (a daemon has several connections, and some send on their own).
 */
async function resettingProxy(sock: string): Promise<{ port: number; resetNext(what: string): void; close(): void }> {
  let arm: string | undefined;
  const conns = new Set<net.Socket>();
  const server = net.createServer((client) => {
    const up = net.createConnection(sock);
    conns.add(client).add(up);
    client.on("data", (d: Buffer) => {
      if (arm === undefined || !d.includes(arm)) return void up.write(d);
      arm = undefined;
      up.destroy();
      client.resetAndDestroy();
    });
    up.on("data", (d) => client.write(d));
    for (const s of [client, up]) {
      s.on("error", () => {});
      s.on("close", () => (client.destroy(), up.destroy(), conns.delete(s)));
    }
  });
  await new Promise<void>((res) => server.listen(0, "127.0.0.1", res));
  return {
    port: (server.address() as net.AddressInfo).port,
    resetNext: (what) => void (arm = what),
    close: () => {
      server.close();
      for (const s of conns) s.destroy();
    },
  };
}

describe.skipIf(!!skip)("Redis connection errors reach programs as EIO", () => {
  test("a connection reset by Redis is EIO, not ECONNRESET", async () => {
    const base = temp("reset");
    const r = await redis();
    const proxy = await resettingProxy(r.url.slice("unix://".length));
    cleanups.push(() => proxy.close());
    const a = await daemon({ base, name: "rs", redisUrl: `redis://127.0.0.1:${proxy.port}`, args: ["--attr-timeout", "0", "--entry-timeout", "0"] });
    // Nothing here touches the mount synchronously: this process runs the proxy the daemon needs.
    // A mkdir: always asked of Redis (a missing name may be answered from a listing this node watches).
    proxy.resetNext("made-during-reset");
    // In another process: this one runs the proxy, which a synchronous call here would block.
    const mkdir = (name: string) => spawn([process.execPath, "-e", `try { require("fs").mkdirSync(${JSON.stringify(join(a.mnt, name))}); console.log("OK") } catch (e) { console.log(e.code) }`], { stdout: "pipe" });
    expect((await new Response(mkdir("made-during-reset").stdout).text()).trim()).toBe("EIO");
    expect((await new Response(mkdir("made-after-reset").stdout).text()).trim()).toBe("OK");
  });
});

describe.skipIf(!!skip)("CSI requests beyond what can be stored", () => {
  test("too long names and too large capacities are refused, and nothing stored breaks a later call", async () => {
    const base = temp("csibad");
    const r = await redis();
    const ctrl = await startCsi("csi-controller", base, "controller", ["--redis-url", r.url]);
    cleanups.push(() => ctrl.stop());
    const C = (m: string, req?: object) => ctrl.client.call("Controller", m, req);
    const caps = [{ mount: {}, access_mode: { mode: "MULTI_NODE_MULTI_WRITER" } }];
    const expectStatus = (what: string, res: CallResult, status: string, mentions: string) => {
      expect({ what, status: res.status }).toEqual({ what, status });
      if (status !== "OK") expect(res.message).toContain(mentions);
    };
    const MAX = 2n ** 63n - 1n;
    const cases: [what: string, req: object, status: string, mentions: string][] = [
      ["a name of 253 bytes (the longest PV name)", { name: "p".repeat(253), volume_capabilities: caps }, "OK", ""],
      ["a name of 254 bytes", { name: "p".repeat(254), volume_capabilities: caps }, "INVALID_ARGUMENT", "name"],
      ["a name of 16 MiB", { name: "n".repeat(16 << 20), volume_capabilities: caps }, "INVALID_ARGUMENT", "name"],
      ["required_bytes 2^63-1", { name: "huge", volume_capabilities: caps, capacity_range: { required_bytes: MAX.toString() } }, "OUT_OF_RANGE", "required_bytes"],
      ["limit_bytes 2^63-1 alone", { name: "huge-limit", volume_capabilities: caps, capacity_range: { limit_bytes: MAX.toString() } }, "OUT_OF_RANGE", "limit_bytes"],
      ["required_bytes 1 PiB", { name: "big", volume_capabilities: caps, capacity_range: { required_bytes: String(2 ** 50) } }, "OK", ""],
    ];
    for (const [what, req, status, mentions] of cases) expectStatus(`CreateVolume: ${what}`, await C("CreateVolume", req), status, mentions);
    const vol = await C("CreateVolume", { name: "grows", volume_capabilities: caps, capacity_range: { required_bytes: 1 << 30 } });
    expect(vol.ok).toBe(true);
    const id = vol.reply.volume.volume_id;
    const expand: [what: string, range: object, status: string, mentions: string][] = [
      ["required_bytes 2^63-1", { required_bytes: MAX.toString() }, "OUT_OF_RANGE", "required_bytes"],
      ["limit_bytes 2^63-1", { required_bytes: 2 ** 31, limit_bytes: MAX.toString() }, "OUT_OF_RANGE", "limit_bytes"],
      ["required_bytes 2^53", { required_bytes: (2n ** 53n).toString() }, "OUT_OF_RANGE", "required_bytes"],
      ["required_bytes 2 GiB", { required_bytes: 2 ** 31 }, "OK", ""],
    ];
    for (const [what, range, status, mentions] of expand) expectStatus(`ControllerExpandVolume: ${what}`, await C("ControllerExpandVolume", { volume_id: id, capacity_range: range }), status, mentions);
    const list = await C("ListVolumes", {});
    expectStatus("ListVolumes afterwards", list, "OK", "");
    const listed = new Map((list.reply.entries as { volume: { volume_id: string; capacity_bytes: number } }[]).map((e) => [e.volume.volume_id, e.volume.capacity_bytes]));
    expect(listed.size).toBe(3);
    expect(listed.get(id)).toBe(2 ** 31);
  });
});
