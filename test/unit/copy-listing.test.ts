import { expect, test } from "bun:test";
import pino from "pino";
import { createMemoryStore } from "../../src/meta/memory-store.ts";
import type { MetadataStore } from "../../src/meta/store.ts";
import { createCopyListing } from "../../src/vfs/copy-listing.ts";

const ROOT = 1, FILE = 0o100644;

async function until(what: string, cond: () => Promise<boolean>): Promise<void> {
  for (let i = 0; !(await cond()); i++) {
    if (i > 1000) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(2);
  }
}

test("copies made together are listed in one store call, a little behind; one evicted before it went out is never listed; one evicted after is unlisted", async () => {
  const store = createMemoryStore({ nodeId: "a" });
  await store.init(0o755, 0, 0);
  let calls = 0;
  const counted: MetadataStore = { ...store, addCachedCopies: (...a) => (calls++, store.addCachedCopies(...a)) };
  const listing = createCopyListing({ store: counted, nodeId: "b", startedAt: 7, log: pino({ level: "silent" }) });
  const files = await Promise.all(["f", "g", "h"].map((n) => store.create(ROOT, n, { mode: FILE, uid: 0, gid: 0 })));
  const listed = async (ino: number) => (await store.holders(ino)).cached.get("b");
  for (const f of files) listing.added(f.ino, f.version);
  listing.evicted(files[2]!.ino, files[2]!.version);
  expect(await listed(files[0]!.ino)).toBeUndefined();
  await until("the listing", async () => (await listed(files[0]!.ino)) !== undefined);
  expect(await listed(files[1]!.ino)).toEqual({ version: files[1]!.version, startedAt: 7 });
  expect(await listed(files[2]!.ino)).toBeUndefined();
  expect(calls).toBe(1);
  listing.evicted(files[0]!.ino, files[0]!.version);
  await until("the unlisting", async () => (await listed(files[0]!.ino)) === undefined);
  expect(await listed(files[1]!.ino)).toBeDefined();
});
