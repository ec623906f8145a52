import { describe, expect, test } from "bun:test";
import { createChangeOutbox, type ChangeOutbox, type FeedMessage } from "../../src/meta/change-outbox.ts";

/** An outbox whose messages land in sent, with no other node live (nothing waits for acknowledgements). */
function outboxOf(): { box: ChangeOutbox; sent: FeedMessage[] } {
  const sent: FeedMessage[] = [];
  const box = createChangeOutbox({
    nodeId: "a",
    peers: async () => [],
    listen: async () => true,
    send: async (m) => void sent.push(JSON.parse(m) as FeedMessage),
  });
  return { box, sent };
}

/** Let every queued microtask run (a timer cannot fire meanwhile). */
async function microtasks(): Promise<void> {
  for (let i = 0; i < 20; i++) await Promise.resolve();
}

const touched = (dir: number) => ({ inodes: [dir] });
const inodesOf = (m: FeedMessage) => m.changes.flatMap((c) => c.inodes);

async function until(what: string, cond: () => boolean): Promise<void> {
  for (let i = 0; !cond(); i++) {
    if (i > 2000) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(1);
  }
}

describe("change outbox", () => {
  test("changes nobody waits for, made in separate turns, go out together, in order", async () => {
    const { box, sent } = outboxOf();
    await box.publish(touched(1));
    await microtasks();
    await box.publish(touched(2));
    await microtasks();
    expect(sent).toEqual([]);
    await until("the gathered message", () => sent.length > 0);
    expect(sent.map(inodesOf)).toEqual([[1, 2]]);
  });

  test("a change that waits takes what was gathered with it at once, in one message, in order", async () => {
    const { box, sent } = outboxOf();
    void box.publish(touched(1));
    await microtasks();
    const waited = box.publish(touched(2), true);
    await microtasks();
    expect(sent.map(inodesOf)).toEqual([[1, 2]]);
    expect(sent[0]!.ack).toBe(true);
    await waited;
  });

  test("a change watched by another node is not held back", async () => {
    const sent: FeedMessage[] = [];
    const box = createChangeOutbox({
      nodeId: "a",
      peers: async () => ["b"],
      listen: async () => true,
      send: async (m) => void sent.push(JSON.parse(m) as FeedMessage),
    });
    const waited = box.publish(touched(7), false, ["b"]);
    await until("the watched change's message", () => sent.length > 0);
    expect(sent[0]!.waits).toEqual(["b"]);
    box.acked(`b ${sent[0]!.seq}`);
    await waited;
  });

  test("flush sends what is held at once (a store closing)", async () => {
    const { box, sent } = outboxOf();
    await box.publish(touched(3));
    await microtasks();
    expect(sent).toEqual([]);
    box.flush();
    await microtasks();
    expect(sent.map(inodesOf)).toEqual([[3]]);
    box.flush();
    await microtasks();
    expect(sent).toHaveLength(1);
  });
});
