import { describe, expect, test } from "bun:test";
import { createOpenFiles, type Handle } from "../../src/vfs/open-files.ts";
import type { Inode } from "../../src/meta/store.ts";

const rec = { ino: 7, version: 1 } as Inode;
const handle = (writable: boolean): Handle => ({ ino: 7, fd: 3, writable, dirty: false });

/** What a peer may serve of a file from its root: steady's answer, by case. */
describe("steady: whether a file's bytes in the root are those of a version", () => {
  test("no writer: true until a writer opens it", () => {
    const open = createOpenFiles();
    const check = open.steady(7, 1);
    expect(check()).toBe(true);
    open.add(handle(true), rec);
    expect(check()).toBe(false);
  });

  test("a writer open: false, for any version it has not published while open", () => {
    const open = createOpenFiles();
    open.add(handle(true), rec);
    expect(open.steady(7)()).toBe(false);
    expect(open.steady(7, 1)()).toBe(false);
  });

  test("a version the open writer published (fsync): true while no other writer opens, and while its entry lasts", () => {
    const open = createOpenFiles();
    const w = handle(true);
    const fh = open.add(w, rec);
    open.inode(7)!.live = 2;
    const check = open.steady(7, 2);
    expect(check()).toBe(true);
    expect(open.steady(7, 1)()).toBe(false);
    // A newer publish by the same writer: the older version's bytes are gone.
    open.inode(7)!.live = 3;
    expect(check()).toBe(false);
    open.inode(7)!.live = 2;
    expect(check()).toBe(true);
    // Another writer opens: its writes follow no publish of version 2.
    open.add(handle(true), rec);
    expect(check()).toBe(false);
    expect(open.steady(7, 2)()).toBe(false);
    open.remove(fh, w);
  });

  test("the last handle gone: the entry that published the version is gone with it", () => {
    const open = createOpenFiles();
    const w = handle(true);
    const fh = open.add(w, rec);
    open.inode(7)!.live = 2;
    const check = open.steady(7, 2);
    open.remove(fh, w);
    open.add(handle(true), rec);
    open.inode(7)!.live = 2;
    expect(check()).toBe(false);
  });
});
