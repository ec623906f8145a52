import { describe, expect, test } from "bun:test";
import { createRwLock } from "../../src/util/rw-lock.ts";

/** A promise and its resolve, to hold a section open until the test lets it end. */
function gate(): { open: Promise<void>; release: () => void } {
  let release!: () => void;
  const open = new Promise<void>((r) => (release = r));
  return { open, release };
}
const turn = () => new Promise<void>((r) => setTimeout(r, 0));

describe("rw lock", () => {
  test("sharers hold it together; one alone waits for them, and holds it alone", async () => {
    const lock = createRwLock();
    const log: string[] = [];
    const g1 = gate(), g2 = gate(), g3 = gate();
    const s1 = lock.shared(async () => (log.push("s1"), await g1.open));
    const s2 = lock.shared(async () => (log.push("s2"), await g2.open));
    const x = lock.exclusive(async () => (log.push("x"), await g3.open));
    await turn();
    expect(log).toEqual(["s1", "s2"]);
    g1.release();
    await s1;
    await turn();
    expect(log).toEqual(["s1", "s2"]);
    g2.release();
    await s2;
    await turn();
    expect(log).toEqual(["s1", "s2", "x"]);
    g3.release();
    await x;
  });

  test("a sharer asking after one waiting alone goes after it (no starving); a throw lets the next in", async () => {
    const lock = createRwLock();
    const log: string[] = [];
    const g1 = gate();
    const s1 = lock.shared(async () => (log.push("s1"), await g1.open));
    const x = lock.exclusive(async () => {
      log.push("x");
      throw new Error("refused");
    });
    const s2 = lock.shared(async () => void log.push("s2"));
    await turn();
    expect(log).toEqual(["s1"]);
    g1.release();
    await s1;
    await expect(x).rejects.toThrow("refused");
    await s2;
    expect(log).toEqual(["s1", "x", "s2"]);
  });
});
