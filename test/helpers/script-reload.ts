import { expect } from "bun:test";
import type { MetadataStore } from "../../src/meta/store.ts";

/**
 * On a server that has just lost its scripts (a new master, a restarted Redis) and has one of them
 * loaded again (old's setData): a close's update sent right behind its create, in one pipeline as a
 * create written behind and its close send them, is made after the create, not refused before it.
 */
export async function updateMadeAfterCreate(s: MetadataStore, old: number): Promise<void> {
  await s.setData(old, 1, 1n, 1n, "n1", "/old");
  const ino = await s.reserveInodes(1);
  const [made, closed] = await Promise.allSettled([
    s.create(1, "new", { mode: 0o100644, uid: 0, gid: 0, holder: "n1", ino }),
    s.setData(ino, 5, 2n, 2n, "n1", "/new"),
  ]);
  expect([made.status, closed.status]).toEqual(["fulfilled", "fulfilled"]);
  expect((await s.get(ino)).size).toBe(5);
}
