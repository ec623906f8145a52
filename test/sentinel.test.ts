import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { spawn } from "bun";
import { fuseUnavailable, MCFS, tempDir, waitFor } from "./helpers/env.ts";
import { startDaemon, type TestDaemon } from "./helpers/daemon.ts";
import { startSentinels, type TestSentinels } from "./helpers/redis.ts";

const skip = fuseUnavailable();

/**
 * Two nodes on a master with two replicas watched by three sentinels; each namespace change waits for
 * one replica's acknowledgement. The master is switched under a workload of files written on A.
 */
describe.skipIf(!!skip)("metadata failover through Redis Sentinel", () => {
  let g: TestSentinels;
  let t: ReturnType<typeof tempDir>;
  const nodes: TestDaemon[] = [];
  const url = () => `${g.url}?wait_replicas=1&wait_ms=20000&failover_wait_ms=30000`;

  beforeAll(async () => {
    t = tempDir("sentinel-nodes");
    g = await startSentinels(2);
    for (const name of ["a", "b"]) nodes.push(await startDaemon({ base: t.path, name, redisUrl: url() }));
  });
  afterAll(async () => {
    for (const d of nodes) await d.stop();
    await g?.stop();
    if (!process.env.MCFS_KEEP) t?.remove();
  });

  /**
   * Files written and closed on A without pause while switchMaster runs; once the sentinels name a
   * new master, 30 more. Every write returns without error, and every closed file reads whole on
   * both nodes afterwards (settle: once the nodes have republished what the switch lost).
   */
  async function writeThrough(tag: string, switchMaster: (port: number) => Promise<void>, settle = false) {
    const [a, b] = nodes as [TestDaemon, TestDaemon];
    const acked = new Map<string, Buffer>();
    const errors: string[] = [];
    let stop = false;
    const writer = (async () => {
      for (let i = 0; !stop; i++) {
        const name = `${tag}-${i}`;
        const data = randomBytes(1 + ((i * 7919) % 65536));
        const t0 = Date.now();
        try {
          await fs.promises.writeFile(join(a.mnt, name), data);
          acked.set(name, data);
        } catch (e) {
          errors.push(`${name} after ${Date.now() - t0} ms: ${(e as Error).message}`);
        }
      }
    })();
    await waitFor("files before the switch", () => acked.size >= 30);
    const old = await g.masterPort();
    await switchMaster(old);
    await waitFor("a new master", async () => (await g.masterPort()) !== old, 60_000);
    const atSwitch = acked.size;
    await waitFor("files after the switch", () => acked.size >= atSwitch + 30 || errors.length > 0, 60_000);
    stop = true;
    await writer;
    expect(errors).toEqual([]);
    const bad = () =>
      [a, b].flatMap((d) => {
        // The listing is whole too: nothing written was lost from the directory.
        const listed = new Set(fs.readdirSync(d.mnt));
        const whole = (name: string, data: Buffer) => {
          try {
            return listed.has(name) && fs.readFileSync(join(d.mnt, name)).equals(data);
          } catch {
            return false;
          }
        };
        return [...acked].filter(([name, data]) => !whole(name, data)).map(([n]) => `${d.mnt}/${n}`);
      });
    if (settle) await waitFor("every closed file whole on both nodes", () => bad().length === 0, 60_000).catch(() => {});
    expect(bad()).toEqual([]);
  }

  async function status(): Promise<{ code: number; out: string }> {
    const p = spawn([MCFS, "status", "-u", url()], { stdout: "pipe", stderr: "pipe" });
    const out = (await new Response(p.stdout).text()) + (await new Response(p.stderr).text());
    return { code: await p.exited, out };
  }

  /**
   * Sentinel promotes a replica while the old master still takes writes, and its other replica still
   * acknowledges them (WAIT cannot tell), until the sentinels reconfigure both: writes of that moment
   * are lost from Redis. The nodes notice (a new server) and publish again the files they hold.
   */
  test("SENTINEL FAILOVER under a workload: no write fails, every closed file is back whole, status works", async () => {
    await writeThrough(
      "gentle",
      async () => {
        expect(await g.cliAt(g.sentinelPorts[0]!, "sentinel", "failover", g.master)).toBe("OK");
      },
      true,
    );
    const s = await status();
    expect(s.out).not.toContain("rror");
    expect(s.code).toBe(0);
  }, 180_000);

  test("kill -9 of the master under a workload: writes wait for the new master, every closed file is whole, status works", async () => {
    // One of two replicas acknowledges each change: the one promoted may not be it (see README).
    await writeThrough("killed", (port) => g.kill(port), true);
    const s = await status();
    expect(s.out).not.toContain("rror");
    expect(s.code).toBe(0);
    // The mounts never went away.
    for (const d of nodes) expect(fs.readdirSync(d.mnt).length).toBeGreaterThan(0);
  }, 180_000);
});
