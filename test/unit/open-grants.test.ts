import { describe, expect, test } from "bun:test";
import type { ShimGrants } from "../../src/fuse/types.ts";
import { createOpenGrants } from "../../src/vfs/open-grants.ts";

/** What the shim was told, in order. */
function shimOf(limit: number, refuse = false): ShimGrants & { told: string[] } {
  const told: string[] = [];
  return {
    told,
    limit,
    grant: (ino, _fd, id, version) => (told.push(`grant ${ino} ${id} v${version}`), !refuse),
    revoke: (ino) => void told.push(`revoke ${ino}`),
    settle: (ino, id) => void told.push(`settle ${ino} ${id}`),
    clear: () => void told.push("clear"),
    supply: (fhs) => void told.push(`supply ${fhs.length}`),
  };
}

describe("open grants", () => {
  test("a grant stands until revoked, replaced or cleared; the version it is of is known while it stands", () => {
    const g = createOpenGrants(shimOf(10));
    expect(g.grant(5, 20, 1, 7, 100, true)).toBe(true);
    expect([g.stands(5, 1), g.versionOf(5)]).toEqual([true, 7]);
    g.grant(5, 20, 2, 8, 100, true);
    expect([g.stands(5, 1), g.stands(5, 2), g.versionOf(5)]).toEqual([false, true, 8]);
    g.revoke(5);
    expect([g.stands(5, 2), g.versionOf(5)]).toEqual([false, undefined]);
    g.grant(6, 20, 3, 1, 1, false);
    g.clear();
    expect(g.stands(6, 3)).toBe(false);
  });

  test("past its limit (each grant holds a file descriptor) the one granted longest ago is revoked first", () => {
    const shim = shimOf(2);
    const g = createOpenGrants(shim);
    g.grant(1, 20, 1, 1, 1, true);
    g.grant(2, 20, 2, 1, 1, true);
    g.grant(3, 20, 3, 1, 1, true);
    expect(shim.told).toEqual(["grant 1 1 v1", "grant 2 2 v1", "revoke 1", "grant 3 3 v1"]);
    expect([g.stands(1, 1), g.stands(2, 2), g.stands(3, 3)]).toEqual([false, true, true]);
  });

  test("a grant the shim refuses does not stand", () => {
    const g = createOpenGrants(shimOf(10, true));
    expect(g.grant(1, 20, 1, 1, 1, true)).toBe(false);
    expect(g.stands(1, 1)).toBe(false);
  });
});
