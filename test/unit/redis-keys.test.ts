import { describe, expect, test } from "bun:test";
import { createKeys } from "../../src/meta/redis/keys.ts";

/** The key names the TypeScript side builds must be those the Lua scripts build from the same prefix. */
describe("redis key map", () => {
  const k = createKeys("vol:a:");

  test("per-inode, per-node and global keys", () => {
    expect([k.next, k.inode(7), k.entries(7), k.links(7), k.xattrs(7), k.locations(7), k.cached(7)]).toEqual(["vol:a:next", "vol:a:i:7", "vol:a:d:7", "vol:a:l:7", "vol:a:x:7", "vol:a:loc:7", "vol:a:cc:7"]);
    expect([k.orphans, k.nodes, k.seen, k.inval]).toEqual(["vol:a:orphans", "vol:a:nodes", "vol:a:seen", "vol:a:inval"]);
    expect([k.heartbeat("n1"), k.ack("n1"), k.todo("n1")]).toEqual(["vol:a:hb:n1", "vol:a:ack:n1", "vol:a:todo:n1"]);
  });

  test("scan patterns, and the inode a scanned key is for (a prefix may hold colons)", () => {
    expect(k.scan).toEqual({ inodes: "vol:a:i:*", locations: "vol:a:loc:*", cached: "vol:a:cc:*", copies: "vol:a:copy:*" });
    expect(k.nodeOfCopies(k.copies("n:1"))).toBe("n:1");
    expect(k.inodeOf(k.inode(12345), "i")).toBe(12345);
    expect(k.inodeOf(k.locations(9), "loc")).toBe(9);
    expect(k.isLocations(k.locations(9))).toBe(true);
    expect(k.isLocations(k.cached(9))).toBe(false);
  });
});
