import { describe, expect, test } from "bun:test";
import type { ShimGrants } from "../../src/fuse/types.ts";
import type { Inode } from "../../src/meta/store.ts";
import { createOpenGrants } from "../../src/vfs/open-grants.ts";

/** What the shim was told, in order. */
function shimOf(limit: number, refuse = false): ShimGrants & { told: string[] } {
  const told: string[] = [];
  return {
    told,
    limit,
    grant: (ino, _fd, id, version, _size, _copy, fresh) => (told.push(`grant ${ino} ${id} v${version}${fresh ? " fresh" : ""}`), !refuse),
    revoke: (ino) => void told.push(`revoke ${ino}`),
    settle: (ino, id) => void told.push(`settle ${ino} ${id}`),
    clear: () => void told.push("clear"),
    supply: (fhs) => void told.push(`supply ${fhs.length}`),
  };
}

const rec = (ino: number, version: number) => ({ ino, version, mode: 0o100644 }) as Inode;
let fhs = 100;
const reserveFh = () => ++fhs;

describe("open grants", () => {
  test("a grant stands until revoked, replaced or cleared; the version it is of is known while it stands", () => {
    const shim = shimOf(10);
    const g = createOpenGrants(shim, reserveFh);
    const first = g.grant(rec(5, 7), 20, 100, true, false)!;
    expect([g.stands(5, first), g.versionOf(5)]).toEqual([true, 7]);
    const second = g.grant(rec(5, 8), 20, 100, true, false)!;
    expect([g.stands(5, first), g.stands(5, second), g.versionOf(5)]).toEqual([false, true, 8]);
    g.revoke(5);
    expect([g.stands(5, second), g.versionOf(5)]).toEqual([false, undefined]);
    const third = g.grant(rec(6, 1), 20, 1, false, false)!;
    g.clear();
    expect(g.stands(6, third)).toBe(false);
    // The shim's handle numbers come with the first grant; one more for each open it answers.
    expect(shim.told[0]).toBe("supply 64");
    g.tookHandle();
    expect(shim.told.at(-1)).toBe("supply 1");
  });

  test("past its limit (each grant holds a file descriptor) the one granted longest ago is revoked first", () => {
    const shim = shimOf(2);
    const g = createOpenGrants(shim, reserveFh);
    const ids = [1, 2, 3].map((ino) => g.grant(rec(ino, 1), 20, 1, true, false)!);
    expect(shim.told).toEqual(["supply 64", "grant 1 1 v1", "grant 2 2 v1", "revoke 1", "grant 3 3 v1"]);
    expect([g.stands(1, ids[0]!), g.stands(2, ids[1]!), g.stands(3, ids[2]!)]).toEqual([false, true, true]);
  });

  test("a grant the shim refuses does not stand", () => {
    const g = createOpenGrants(shimOf(10, true), reserveFh);
    expect(g.grant(rec(1, 1), 20, 1, true, false)).toBeUndefined();
    expect(g.versionOf(1)).toBeUndefined();
  });

  test("a grant's record is kept while it stands, however many grants come and go after it; a revoked one's for a while", () => {
    const g = createOpenGrants(shimOf(100), reserveFh, 10);
    const kept = g.grant(rec(1, 3), 20, 1, true, false)!;
    const early = g.grant(rec(2, 1), 20, 1, true, false)!;
    g.revoke(2);
    expect(g.recordOf(2, early)?.version).toBe(1);
    for (let i = 0; i < 50; i++) {
      g.grant(rec(1000 + i, 1), 20, 1, true, false);
      g.revoke(1000 + i);
    }
    expect(g.recordOf(1, kept)).toEqual(rec(1, 3));
    expect(g.recordOf(2, early)).toBeUndefined();
    expect(g.recordOf(1049, 52)?.ino).toBe(1049);
  });

  test("a fresh grant is settled once, and only while it stands", () => {
    const shim = shimOf(10);
    const g = createOpenGrants(shim, reserveFh);
    const id = g.grant(rec(1, 1), 20, 1, true, true)!;
    expect(g.fresh(1, id)).toBe(true);
    g.settle(1, id);
    g.settle(1, id);
    expect(g.fresh(1, id)).toBe(false);
    const next = g.grant(rec(1, 2), 20, 1, true, true)!;
    g.settle(1, id);
    expect(g.fresh(1, next)).toBe(true);
    g.revoke(1);
    g.settle(1, next);
    expect(shim.told.filter((t) => t.startsWith("settle"))).toEqual([`settle 1 ${id}`]);
  });
});
