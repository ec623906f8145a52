import { describe, expect, test } from "bun:test";
import { createTurnstile } from "../../src/util/turnstile.ts";

describe("turnstile", () => {
  test("callers of one key get in one at a time, in the order they came; other keys do not wait; leaving twice lets no one in early", async () => {
    const t = createTurnstile<string>();
    const seen: string[] = [];
    const leave1 = await t.enter("k");
    const second = t.enter("k").then((leave) => (seen.push("second in"), leave));
    const third = t.enter("k").then((leave) => (seen.push("third in"), leave));
    const other = await t.enter("other");
    seen.push("other in");
    await Bun.sleep(0);
    expect(seen).toEqual(["other in"]);
    leave1();
    const leave2 = await second;
    leave1();
    await Bun.sleep(0);
    expect(seen).toEqual(["other in", "second in"]);
    leave2();
    (await third)();
    other();
    expect(seen).toEqual(["other in", "second in", "third in"]);
    // Nobody in: the next one gets in at once.
    (await t.enter("k"))();
  });
});
