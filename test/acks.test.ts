import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { fuseUnavailable, waitFor } from "./helpers/env.ts";
import type { TestDaemon } from "./helpers/daemon.ts";
import { useCluster } from "./helpers/node.ts";

const skip = fuseUnavailable();
const SLOW = "nodes did not acknowledge a change in time";

/** Renames and unlinks wait for every live node's acknowledgement: none may be lost, a stopped node costs one wait. */
describe.skipIf(!!skip)("acknowledgements of changes", () => {
  const cluster = useCluster("acks", ["a", "b", "c"]);

  test("no acknowledgement is lost, also for the first change after the node list went stale", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "idle"));
    for (let i = 0; i < 3; i++) {
      // Past the second after which a node refreshes its list of live peers (where acks got lost).
      await Bun.sleep(1100);
      fs.writeFileSync(join(a.mnt, "idle", `f${i}`), "x");
      fs.renameSync(join(a.mnt, "idle", `f${i}`), join(a.mnt, "idle", `g${i}`));
      fs.unlinkSync(join(a.mnt, "idle", `g${i}`));
    }
    for (let i = 0; i < 100; i++) {
      fs.writeFileSync(join(b.mnt, "idle", `h${i}`), "x");
      fs.unlinkSync(join(b.mnt, "idle", `h${i}`));
    }
    for (const n of cluster.nodes) expect(n.log()).not.toContain(SLOW);
  });

  test("a stopped node is waited for once, not by every change; it is waited for again once it answers", async () => {
    const [a, b, c] = cluster.nodes as [TestDaemon, TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "stopped"));
    for (let i = 0; i < 20; i++) fs.writeFileSync(join(a.mnt, "stopped", `f${i}`), "x");
    c.proc.kill("SIGSTOP");
    try {
      for (let i = 0; i < 20; i++) fs.unlinkSync(join(a.mnt, "stopped", `f${i}`));
      for (let i = 0; i < 5; i++) fs.mkdirSync(join(b.mnt, "stopped", `d${i}`));
      for (let i = 0; i < 5; i++) fs.rmdirSync(join(b.mnt, "stopped", `d${i}`));
    } finally {
      c.proc.kill("SIGCONT");
    }
    const slow = (n: TestDaemon) => n.log().split("\n").filter((l) => l.includes(SLOW)).length;
    expect(slow(a)).toBe(1);
    expect(slow(b)).toBe(1);
    // Once c answers again, it is waited for again (and it saw every change).
    await waitFor("c to answer again", () => a.log().includes("nodes acknowledge changes again"));
    expect(fs.readdirSync(join(c.mnt, "stopped"))).toEqual([]);
  });
});
