import { describe, expect, setSystemTime, test } from "bun:test";
import { createOpenFiles, type Handle } from "../../src/vfs/open-files.ts";
import { OVERWRITE_SERVED_AFTER_MS } from "../../src/vfs/remote/changing-wait.ts";
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

  test("a version a writer published while open (fsync): true while writers stay open, and while its entry lasts", () => {
    const open = createOpenFiles();
    const w = handle(true);
    const fh = open.add(w, rec);
    open.published(7, 2, 10);
    const check = open.steady(7, 2);
    expect(check()).toBe(true);
    expect(open.steady(7, 1)()).toBe(false);
    expect(open.liveSize(7, 2)).toBe(10);
    expect(open.liveSize(7, 1)).toBeUndefined();
    // A newer publish: the older version stays served as the file is (a reader may be fetching it still).
    open.published(7, 3, 12);
    expect(check()).toBe(true);
    expect(open.steady(7, 3)()).toBe(true);
    expect(open.liveSize(7, 2)).toBe(10);
    expect(open.liveSize(7, 3)).toBe(12);
    // Only the last 1024 are kept.
    for (let v = 100; v < 1124; v++) open.published(7, v, 1);
    expect(check()).toBe(false);
    expect(open.liveSize(7, 100)).toBe(1);
    // A second writer joins the first: as the first's own later writes, seen by readers of those versions.
    const w2 = handle(true);
    const fh2 = open.add(w2, rec);
    expect(open.steady(7, 1123)()).toBe(true);
    open.remove(fh, w);
    open.remove(fh2, w2);
  });

  test("a writer opening the file once its writers closed: the version is a closed one, not served as it changes", () => {
    const open = createOpenFiles();
    const w = handle(true);
    const fh = open.add(w, rec);
    // A reader keeps the inode's entry.
    const r = handle(false);
    open.add(r, rec);
    open.published(7, 2, 10);
    open.remove(fh, w);
    expect(open.liveSize(7, 2)).toBeUndefined();
    const opening = open.writerOpens(7);
    open.add(handle(true), rec);
    opening.done();
    expect(open.steady(7, 2)()).toBe(false);
    expect(open.liveSize(7, 2)).toBeUndefined();
  });

  test("versions published while a writer's open of the closed file runs (a closed writer's duplicate closed elsewhere): served as the file is once that writer is open, though their handle went meanwhile", () => {
    for (const handleGoes of [false, true]) {
      const open = createOpenFiles();
      const closedWriter = handle(true);
      const fh = open.add(closedWriter, rec);
      closedWriter.closed = true;
      open.published(7, 2, 10);
      const opening = open.writerOpens(7);
      expect(opening.latest).toBeUndefined();
      open.published(7, 3, 10);
      open.published(7, 4, 11);
      if (handleGoes) open.remove(fh, closedWriter);
      expect(opening.latest).toEqual({ version: 4, size: 11 });
      open.add(handle(true), rec);
      opening.done();
      expect(open.steady(7, 2)()).toBe(false);
      expect(open.liveSize(7, 2)).toBeUndefined();
      expect(open.steady(7, 3)()).toBe(true);
      expect(open.liveSize(7, 4)).toBe(11);
    }
  });

  test("the last handle gone: the entry that published the version is gone with it", () => {
    const open = createOpenFiles();
    const w = handle(true);
    const fh = open.add(w, rec);
    open.published(7, 2, 10);
    const check = open.steady(7, 2);
    open.remove(fh, w);
    open.add(handle(true), rec);
    open.published(7, 2, 10);
    expect(check()).toBe(false);
  });

  test("the closed version a writer opened in place: refused at first, served as the file is to reads of ranges once the writer has had it open a while, until a writer opens it anew", () => {
    const t0 = Date.now();
    try {
      setSystemTime(t0);
      const open = createOpenFiles();
      const w = handle(true);
      const fh = open.add(w, { ...rec, size: 20 } as Inode);
      open.overwriting(7, { ...rec, size: 20 } as Inode);
      expect(open.steady(7, 1, true)()).toBe(false);
      expect(open.liveSize(7, 1, true)).toBeUndefined();
      setSystemTime(t0 + OVERWRITE_SERVED_AFTER_MS);
      const check = open.steady(7, 1, true);
      expect(check()).toBe(true);
      expect(open.liveSize(7, 1, true)).toBe(20);
      // Only the version the writer opened; never to a copy.
      expect(open.steady(7, 0, true)()).toBe(false);
      expect(open.steady(7, 1)()).toBe(false);
      expect(open.liveSize(7, 1)).toBeUndefined();
      // A publish while open: served too, and the closed version with it.
      open.published(7, 2, 30);
      expect(check()).toBe(true);
      expect(open.liveSize(7, 2)).toBe(30);
      // The writer closes (a reader keeps the entry): a read under way ends on the bytes it left, as
      // for a version published while open; no new one is served at that version.
      open.add(handle(false), rec);
      open.remove(fh, w);
      expect(check()).toBe(true);
      expect(open.liveSize(7, 1, true)).toBeUndefined();
      // A writer opens the next version in place: nothing of the last one is served as it changes.
      const opening = open.writerOpens(7);
      open.add(handle(true), rec);
      opening.done();
      expect(check()).toBe(false);
      expect(open.steady(7, 1, true)()).toBe(false);
      expect(open.liveSize(7, 1, true)).toBeUndefined();
    } finally {
      setSystemTime();
    }
  });
});
