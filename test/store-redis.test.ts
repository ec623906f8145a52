import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import { createRedisStore } from "../src/meta/redis-store.ts";
import type { Invalidation } from "../src/meta/store.ts";
import { harnessOf, storeContract } from "./contract/store-contract.ts";
import { startRedis, type TestRedis } from "./helpers/redis.ts";
import { waitFor } from "./helpers/env.ts";
import { updateMadeAfterCreate } from "./helpers/script-reload.ts";
import { OutcomeUnknown } from "../src/util/errno.ts";

/** One redis-server for the file; each test gets a key prefix of its own. */
let redis: TestRedis | undefined;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

/** Past the change feed's bound on waiting for an acknowledgement (ACK_WAIT_MS, 500 ms): a wait still on then is not running it out. */
const ACK_BOUND_MS = 700;

/** s's subscriber: what it hears, each message acknowledged after ackAfterMs. */
async function heardBy(s: Awaited<ReturnType<typeof createRedisStore>>, ackAfterMs = 0): Promise<Invalidation[]> {
  const heard: Invalidation[] = [];
  await s.subscribe((invs, ack) => {
    heard.push(...invs);
    if (ack) setTimeout(ack, ackAfterMs);
  }, () => {});
  return heard;
}

async function until(what: string, cond: () => boolean): Promise<void> {
  for (const end = Date.now() + 10_000; !cond(); await Bun.sleep(5)) if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
}

/** What only a store with a connection can do: lose it. */
describe("redis store connection", () => {
  test("a subscriber that lost its connection calls resync, then hears changes again", async () => {
    const open = (nodeId: string) => createRedisStore({ url: redis!.url, nodeId, prefix: "resync:" });
    const [a, b] = [await open("node-a"), await open("node-b")];
    try {
      await a.init(0o755, 0, 0);
      let resyncs = 0;
      const heard: Invalidation[] = [];
      await b.subscribe((invs) => heard.push(...invs), () => resyncs++);
      await redis!.cli("CLIENT", "KILL", "TYPE", "pubsub");
      await until("resync", () => resyncs === 1);
      const f = await a.create(1, "f", { mode: 0o100644, uid: 0, gid: 0 });
      await until("the change", () => heard.length === 1);
      expect(heard[0]!.added).toEqual([[1, "f", f.ino]]);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("a client that never subscribed and waits for no node (the CSI controller) still waits for a directory's watchers: it listens for their acknowledgements", async () => {
    const open = (nodeId: string, waitForAcks = true) => createRedisStore({ url: redis!.url, nodeId, prefix: "unsubscribed:", waitForAcks });
    const [controller, b] = [await open("controller", false), await open("node-b")];
    try {
      await controller.init(0o755, 0, 0);
      const heard = await heardBy(b, 100);
      await b.listDir(1, true);
      const t0 = Date.now();
      await controller.create(1, "volume", { mode: 0o40777, uid: 0, gid: 0 });
      const took = Date.now() - t0;
      // Heard before it returned; by its acknowledgement, not the whole bound.
      expect(heard.some((i) => i.added.some(([, n]) => n === "volume"))).toBe(true);
      expect(took).toBeGreaterThanOrEqual(90);
      expect(took).toBeLessThan(450);
    } finally {
      await Promise.all([controller.close(), b.close()]);
    }
  });

  test("a change message Redis refused is sent again, and a watcher's wait counts from its arrival: the watcher hears it before the change returns", async () => {
    const open = (nodeId: string) => createRedisStore({ url: redis!.url, nodeId, prefix: "republish:" });
    const [a, b] = [await open("node-a"), await open("node-b")];
    try {
      await a.init(0o755, 0, 0);
      await a.subscribe(() => {}, () => {});
      const heard = await heardBy(b);
      await b.listDir(1, true);
      await redis!.cli("ACL", "SETUSER", "default", "-publish");
      let returned = false;
      let made: Promise<unknown>;
      try {
        made = a.create(1, "f", { mode: 0o100644, uid: 0, gid: 0 }).then(() => (returned = true));
        // Made in Redis, its message refused: the create waits on.
        await waitFor("the name in Redis", async () => (await b.listDir(1)).length === 1);
        await Bun.sleep(ACK_BOUND_MS);
        expect(returned).toBe(false);
        expect(heard).toEqual([]);
      } finally {
        await redis!.cli("ACL", "SETUSER", "default", "+publish");
      }
      await made;
      expect(heard.some((i) => i.added.some(([, n]) => n === "f"))).toBe(true);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("a node alone on its Redis (the private one) proves its feed current to no one: while a cluster node's subscriber sends PINGs, its own sends none", async () => {
    const own = await startRedis();
    const pings = async (r: TestRedis) => Number(/cmdstat_ping:calls=(\d+)/.exec(await r.cli("INFO", "commandstats"))?.[1] ?? 0);
    const alone = await createRedisStore({ url: own.url, nodeId: "alone", prefix: "alone:", alone: true });
    const member = await createRedisStore({ url: redis!.url, nodeId: "member", prefix: "member:" });
    try {
      await alone.subscribe(() => {}, () => {});
      const before = await pings(own);
      const beforeMember = await pings(redis!);
      await member.subscribe(() => {}, () => {});
      await waitFor("the cluster node's proofs", async () => (await pings(redis!)) >= beforeMember + 5);
      expect(await pings(own)).toBe(before);
    } finally {
      await Promise.all([alone.close(), member.close()]);
      await own.stop();
    }
  });

  test("a node that stops or restarts may have made a change it never told: the other nodes' subscribers resync", async () => {
    const open = (nodeId: string) => createRedisStore({ url: redis!.url, nodeId, prefix: "gone:" });
    const [b, c] = [await open("node-b"), await open("node-c")];
    try {
      await b.init(0o755, 0, 0);
      const why: string[] = [];
      await c.registerNode({ id: "node-c", address: "c", startedAt: 1, watches: true }, 60_000);
      await b.subscribe(() => {}, (w) => why.push(w));
      await until("b to see c live", () => b.watchesHold());
      // A restart (another run).
      await c.registerNode({ id: "node-c", address: "c", startedAt: 2, watches: true }, 60_000);
      await until("b's resync", () => why.length > 0);
      expect(why).toEqual(["node gone"]);
      // A stop (its heartbeat gone).
      await c.unregisterNode("node-c");
      await until("b's second resync", () => why.length > 1);
      expect(why).toEqual(["node gone", "node gone"]);
    } finally {
      await Promise.all([b.close(), c.close()]);
    }
  });

  test("an attribute's removal racing its inode's removal on another node leaves no record behind (no hash holding only a ctime)", async () => {
    const open = (nodeId: string) => createRedisStore({ url: redis!.url, nodeId, prefix: "rmxattr:" });
    const [a, b] = [await open("node-a"), await open("node-b")];
    try {
      await a.init(0o755, 0, 0);
      const stray: number[] = [];
      for (let i = 0; i < 40; i++) {
        const f = await a.create(1, `f${i}`, { mode: 0o100644, uid: 0, gid: 0 });
        await a.setXattr(f.ino, "user.k", new Uint8Array([1]), 0);
        // Sent at once from two connections: b's removal lands before, between or after a's steps.
        await Promise.allSettled([a.removeXattr(f.ino, "user.k"), b.remove(1, `f${i}`, false).then(() => b.purge(f.ino))]);
        if (Number(await redis!.cli("EXISTS", `rmxattr:i:${f.ino}`)) !== 0) stray.push(f.ino);
      }
      expect(stray).toEqual([]);
    } finally {
      await Promise.all([a.close(), b.close()]);
    }
  });

  test("after Redis restarts (its scripts gone), a close's update sent right behind its create is made after it", async () => {
    const s = await createRedisStore({ url: redis!.url, nodeId: "n1", prefix: "reload:" });
    try {
      await s.init(0o755, 0, 0);
      const old = await s.create(1, "old", { mode: 0o100644, uid: 0, gid: 0, holder: "n1" });
      await redis!.cli("SAVE");
      await redis!.restart();
      await waitFor("the store back", () => s.get(1).then(() => true, () => false));
      await updateMadeAfterCreate(s, old.ino);
    } finally {
      await s.close();
    }
  });

  test("a create Redis dies with unread (its client hears ECONNRESET) may or may not have been made: never taken for refused", async () => {
    const s = await createRedisStore({ url: redis!.url, nodeId: "n1", prefix: "unread:" });
    try {
      await s.init(0o755, 0, 0);
      await redis!.pause();
      const made = s.create(1, "f", { mode: 0o100644, uid: 0, gid: 0, holder: "n1" }).then(() => "made", (e: unknown) => e);
      // Dying with bytes unread resets the connection; closed without, it only ends.
      await waitFor("the create queued unread in Redis", async () => (await redis!.unread()) > 0);
      await redis!.restart();
      const e = await made;
      expect(e).toBeInstanceOf(OutcomeUnknown);
    } finally {
      await redis!.resume().catch(() => {});
      await s.close();
    }
  });
});

let run = 0;
storeContract("redis", async () => {
  const prefix = `contract${++run}:`;
  // As the daemon makes it (src/daemon/daemon.ts): a URL, this node's id, a prefix.
  return harnessOf((nodeId) => createRedisStore({ url: redis!.url, nodeId, prefix }));
});
