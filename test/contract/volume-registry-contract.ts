/**
 * The VolumeRegistry contract, run against Redis (test/volume-registry-redis.test.ts) and memory
 * (test/unit/volume-registry-memory.test.ts): the memory registry may drive controller tests only
 * because it passes this.
 */
import { afterEach, beforeEach, describe, expect, test } from "bun:test";
import type { VolumeRegistry } from "../../src/csi/volume-registry.ts";

export interface RegistryHarness {
  /** A registry over empty records. */
  registry: VolumeRegistry;
  cleanup(): Promise<void>;
}

export function volumeRegistryContract(name: string, factory: () => Promise<RegistryHarness>, o: { knownBugs?: Record<string, string> } = {}): void {
  let h: RegistryHarness, reg: VolumeRegistry;
  const it = (title: string, fn: () => Promise<void>) => {
    const bug = o.knownBugs?.[title];
    if (bug !== undefined) test.todo(`${title} [known bug: ${bug}]`, fn);
    else test(title, fn);
  };
  const vol = (id: string, capacity = 100) => ({ id, name: `name-${id}`, capacity, createdAt: 1_700_000_000_000 });

  describe(`VolumeRegistry contract: ${name}`, () => {
    beforeEach(async () => {
      h = await factory();
      reg = h.registry;
    });
    afterEach(async () => {
      await h.cleanup();
    });

    it("ping answers", async () => {
      expect(await reg.ping()).toBe(true);
    });

    it("create stores a volume once; a second create answers the first record", async () => {
      expect(await reg.get("v1")).toBeUndefined();
      expect(await reg.create(vol("v1"))).toEqual({ record: vol("v1"), created: true });
      expect(await reg.get("v1")).toEqual(vol("v1"));
      expect(await reg.create({ ...vol("v1", 5), name: "other" })).toEqual({ record: vol("v1"), created: false });
    });

    it("a volume's tag is kept; markDeleting marks a volume that is there and makes none", async () => {
      await reg.create({ ...vol("t1"), tag: "mcfs-v0123" });
      expect(await reg.get("t1")).toEqual({ ...vol("t1"), tag: "mcfs-v0123" });
      await reg.markDeleting("t1");
      await reg.markDeleting("gone");
      expect(await reg.get("t1")).toEqual({ ...vol("t1"), tag: "mcfs-v0123", deleting: true });
      expect(await reg.get("gone")).toBeUndefined();
      expect(await reg.create(vol("gone"))).toEqual({ record: vol("gone"), created: true });
      expect((await reg.list("", 10)).records.map((r) => r.id)).toEqual(["gone", "t1"]);
      expect(await reg.deletedTags()).toEqual(new Set());
      await reg.remove("gone");
      await reg.remove("t1");
      expect(await reg.deletedTags()).toEqual(new Set(["mcfs-v0123"]));
      expect(await reg.get("t1")).toBeUndefined();
    });

    it("capacities it cannot answer exactly are refused and nothing is stored", async () => {
      for (const c of [-1, 1.5, 2 ** 53, Number.NaN]) {
        await expect(reg.create(vol("bad", c))).rejects.toThrow(/cannot be recorded/);
        expect(await reg.get("bad")).toBeUndefined();
      }
      await reg.create(vol("v1"));
      await expect(reg.setCapacity("v1", -5)).rejects.toThrow(/cannot be recorded/);
      await reg.setCapacity("v1", Number.MAX_SAFE_INTEGER);
      expect((await reg.get("v1"))?.capacity).toBe(Number.MAX_SAFE_INTEGER);
    });

    it("remove forgets the volume and its publications; removing nothing is fine", async () => {
      await reg.create(vol("v1"));
      await reg.publish("v1", "n1", { readonly: false, mode: 5 });
      await reg.remove("v1");
      await reg.remove("v1");
      expect(await reg.get("v1")).toBeUndefined();
      expect(await reg.publications("v1")).toEqual(new Map());
      expect((await reg.list("", 10)).records).toEqual([]);
    });

    it("list pages through volumes in byte order of their ids, after the one given", async () => {
      for (const id of ["b", "a", "B", "aa", "a-", "c"]) await reg.create(vol(id));
      const ids = async (after: string, max: number) => {
        const r = await reg.list(after, max);
        return [r.records.map((x) => x.id), r.more];
      };
      expect(await ids("", 10)).toEqual([["B", "a", "a-", "aa", "b", "c"], false]);
      expect(await ids("", 2)).toEqual([["B", "a"], true]);
      expect(await ids("a", 3)).toEqual([["a-", "aa", "b"], true]);
      expect(await ids("b", 1)).toEqual([["c"], false]);
      expect(await ids("c", 5)).toEqual([[], false]);
      expect(await ids("ab", 5)).toEqual([["b", "c"], false]);
      expect((await reg.list("", 6)).records[1]).toEqual(vol("a"));
    });

    it("publications per node; unpublish one node or all", async () => {
      await reg.create(vol("v1"));
      await reg.publish("v1", "n1", { readonly: true, mode: 1 });
      await reg.publish("v1", "n2", { readonly: false, mode: 5 });
      await reg.publish("v1", "n2", { readonly: false, mode: 3 });
      expect(await reg.publications("v1")).toEqual(new Map([["n1", { readonly: true, mode: 1 }], ["n2", { readonly: false, mode: 3 }]]));
      await reg.unpublish("v1", "n1");
      expect([...(await reg.publications("v1")).keys()]).toEqual(["n2"]);
      await reg.unpublish("v1", "none");
      await reg.unpublish("v1");
      expect(await reg.publications("v1")).toEqual(new Map());
    });

    it("node reports: the last one of each node", async () => {
      expect(await reg.nodes()).toEqual(new Map());
      await reg.reportNode("n1", { free: 1, total: 2, at: 3 });
      await reg.reportNode("n1", { free: 4, total: 5, at: 6 });
      await reg.reportNode("n2", { free: 7, total: 8, at: 9 });
      expect(await reg.nodes()).toEqual(new Map([["n1", { free: 4, total: 5, at: 6 }], ["n2", { free: 7, total: 8, at: 9 }]]));
    });

    it("a capacity set for a volume that is gone does not block creating it again", async () => {
      await reg.setCapacity("gone", 50);
      expect(await reg.get("gone")).toBeUndefined();
      expect(await reg.create(vol("gone"))).toEqual({ record: vol("gone"), created: true });
      expect(await reg.get("gone")).toEqual(vol("gone"));
    });
  });
}
