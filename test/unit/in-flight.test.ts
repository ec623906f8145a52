import { expect, test } from "bun:test";
import { createInFlight } from "../../src/util/in-flight.ts";

test("callers of a key while its task runs share that run; once it settles, the next caller runs it again; other keys run apart", async () => {
  const f = createInFlight<string>();
  let runs = 0;
  let finish!: () => void;
  const task = () => {
    runs++;
    return new Promise<void>((r) => (finish = r));
  };
  const a = f.run("k", task), b = f.run("k", task);
  expect(runs).toBe(1);
  const other = f.run("j", async () => void runs++);
  expect(runs).toBe(2);
  finish();
  await Promise.all([a, b, other]);
  await f.run("k", async () => void runs++);
  expect(runs).toBe(3);
  const failing = f.run("k", () => Promise.reject(new Error("no")));
  await expect(f.run("k", async () => void runs++)).rejects.toThrow("no");
  await failing.catch(() => {});
  await f.run("k", async () => void runs++);
  expect(runs).toBe(4);
});
