import { describe, expect, test } from "bun:test";
import { createKeyedQueue } from "../../src/util/keyed-queue.ts";

/** A promise and its resolve, for a test to end a task when it says. */
function gate(): { done: Promise<void>; open(): void } {
  let open!: () => void;
  const done = new Promise<void>((r) => (open = r));
  return { done, open };
}

describe("keyed queue", () => {
  test("tasks of one key run one at a time in the order asked, a failed one not stopping the next; other keys do not wait", async () => {
    const q = createKeyedQueue<number>();
    const seen: string[] = [];
    const first = gate();
    const a1 = q.run(1, async () => {
      seen.push("a1 start");
      await first.done;
      seen.push("a1 end");
      throw new Error("a1 failed");
    });
    const a2 = q.run(1, async () => {
      seen.push("a2");
      return 2;
    });
    const b = q.run(2, async () => {
      seen.push("b");
      return "b";
    });
    expect(await b).toBe("b");
    expect(seen).toEqual(["a1 start", "b"]);
    first.open();
    await expect(a1).rejects.toThrow("a1 failed");
    expect(await a2).toBe(2);
    expect(seen).toEqual(["a1 start", "b", "a1 end", "a2"]);
  });
});
