import { beforeEach, describe, expect, test } from "bun:test";
import type { Inode } from "../../src/meta/store.ts";
import { E, FsError } from "../../src/util/errno.ts";
import { createKernelView, type KernelView } from "../../src/vfs/kernel-view.ts";
import type { OpenFiles } from "../../src/vfs/open-files.ts";

const DIR = 100;
const rec = (ino: number, gen = `g${ino}`, name = `f${ino}`): Inode => ({
  ino, mode: 0o100644, uid: 0, gid: 0, rdev: 0, size: 1, nlink: 1, atime: 0n, mtime: 0n, ctime: 0n, version: 7, gen, parent: DIR, name,
});

/** What the view made the kernel drop, in order; which inodes are open here. */
let droppedNames: [number, string][], droppedInodes: number[], open: Set<number>, view: KernelView;

function makeView(keptMax: number): KernelView {
  const files = { inode: (ino: number) => (open.has(ino) ? { handles: new Map() } : undefined) } as unknown as OpenFiles;
  return createKernelView({ open: files, keptMax, dropKernelEntry: (p, n) => void droppedNames.push([p, n]), dropKernelInode: (ino) => void droppedInodes.push(ino) });
}

beforeEach(() => {
  droppedNames = [];
  droppedInodes = [];
  open = new Set();
  view = makeView(10);
});

function thrown(f: () => unknown): unknown {
  try {
    f();
  } catch (e) {
    return e;
  }
  return undefined;
}

describe("kernel view", () => {
  // Inode 1 (the root) is always watched: these start past it.
  test("past its bound the oldest inodes are dropped from the kernel (names, attributes) and forgotten; the rest are still watched", () => {
    for (let ino = 21; ino <= 30; ino++) view.told(DIR, `f${ino}`, rec(ino));
    expect(droppedNames).toEqual([]);
    view.told(DIR, "f31", rec(31));
    expect(droppedNames).toEqual([[DIR, "f21"]]);
    expect(droppedInodes).toEqual([21]);
    // Dropped from the kernel: nothing of it to invalidate any more.
    expect(view.mayHaveEntry(DIR, "f21")).toBe(false);
    expect(view.changedElsewhere(21)).toBe(false);
    for (let ino = 22; ino <= 31; ino++) {
      expect(view.mayHaveEntry(DIR, `f${ino}`)).toBe(true);
      expect(view.changedElsewhere(ino)).toBe(true);
    }
  });

  test("everything taken at once (a change may have gone unheard): every name, forgotten here; every inode but those open here, which wait for their last close", () => {
    view.told(DIR, "f21", rec(21));
    view.told(DIR, "f22", rec(22));
    view.told(DIR, "g22", { ...rec(22), nlink: 2, name: "g22" });
    open.add(22);
    const all = view.takeAll();
    expect(all.names.sort()).toEqual([[DIR, "f21"], [DIR, "f22"], [DIR, "g22"]]);
    expect(all.inodes.sort((a, b) => a - b)).toEqual([1, 21]);
    expect(view.mayHaveEntry(DIR, "f21")).toBe(false);
    expect(view.takeAll().names).toEqual([]);
    open.delete(22);
    expect(view.closed(22)).toBe(true);
  });

  test("a file the shim told the kernel of is watched as one told here: its name, its inode, a reused number", () => {
    view.toldByShim(DIR, "made", rec(21));
    expect(view.mayHaveEntry(DIR, "made")).toBe(true);
    expect(view.changedElsewhere(21)).toBe(true);
    // Its number for another file: the name it had is dropped from the kernel.
    view.told(DIR, "other", rec(21, "g-new", "other"));
    expect(droppedNames).toEqual([[DIR, "made"]]);
  });

  test("an inode open here is never dropped (an invalidation under a read could cut it short): the next oldest goes", () => {
    for (let ino = 21; ino <= 30; ino++) view.told(DIR, `f${ino}`, rec(ino));
    open.add(21);
    view.told(DIR, "f31", rec(31));
    expect(droppedInodes).toEqual([22]);
    expect(view.mayHaveEntry(DIR, "f21")).toBe(true);
    // Every one open: none is dropped, and the view grows rather than loop.
    for (let ino = 21; ino <= 31; ino++) open.add(ino);
    view.told(DIR, "f32", rec(32));
    expect(droppedInodes).toEqual([22]);
  });

  test("a name told for a newer inode stays when the older inode it was told for goes", () => {
    view.told(DIR, "x", rec(21));
    view.told(DIR, "x", rec(22));
    for (let ino = 23; ino <= 30; ino++) view.told(DIR, `f${ino}`, rec(ino));
    view.told(DIR, "f31", rec(31));
    expect(droppedInodes).toEqual([21]);
    expect(droppedNames).toEqual([]);
    expect(view.mayHaveEntry(DIR, "x")).toBe(true);
  });

  test("a number that is another file now: ESTALE, and the names the kernel knew the old file by are dropped from it", () => {
    view.told(DIR, "old", rec(5, "first", "old"));
    const e = thrown(() => view.sameFile(rec(5, "second", "new")));
    expect(e instanceof FsError && e.errno).toBe(E.ESTALE);
    expect(droppedNames).toEqual([[DIR, "old"]]);
    expect(view.mayHaveEntry(DIR, "old")).toBe(false);
    // Looked up again: the new file is the kernel's.
    view.told(DIR, "new", rec(5, "second", "new"));
    expect(view.sameFile(rec(5, "second", "new")).gen).toBe("second");
  });

  test("a name told for a number that is another file now drops the old file's other names", () => {
    view.told(DIR, "a", rec(5, "first", "a"));
    view.told(DIR, "b", rec(5, "second", "b"));
    expect(droppedNames).toEqual([[DIR, "a"]]);
  });

  test("renamed elsewhere: an open through the old name is refused (ESTALE), every name of the file dropped from the kernel; opens are refused until it is given a name again (one that walked the old name may come after the drop)", async () => {
    const forgot: [number, string][][] = [];
    let refusals = 0;
    const v = createKernelView({ open: { inode: () => undefined } as unknown as OpenFiles, forgetNames: async (names) => (forgot.push(names), true), refused: () => refusals++ });
    v.told(DIR, "before", rec(3, "g", "before"));
    const moved = rec(3, "g", "after");
    v.told(DIR, "after", moved);
    const opened = (r: Inode) => v.sameName(r).then((x) => x.name, (e: unknown) => (e instanceof FsError && e.errno === E.ESTALE ? "ESTALE" : Promise.reject(e)));
    expect(await opened(moved)).toBe("ESTALE");
    expect(forgot).toEqual([[[DIR, "before"], [DIR, "after"]]]);
    // Opens that walked a name before the drop, arriving after it.
    expect(await opened(moved)).toBe("ESTALE");
    expect(await opened(moved)).toBe("ESTALE");
    expect(refusals).toBe(3);
    expect(forgot.length).toBe(1);
    // Looked up again (the kernel's retry): opens go on.
    v.told(DIR, "after", moved);
    expect(await opened(moved)).toBe("after");
    expect(await opened(moved)).toBe("after");
  });

  test("an open by a name another node's change took, given before this node heard the change, raced it and goes on; one given after, or not known here by that name then, or whose change was acknowledged before the kernel dropped it, is refused", async () => {
    const forgot: [number, string][][] = [];
    const v = createKernelView({ open: { inode: () => undefined } as unknown as OpenFiles, forgetNames: async (names) => (forgot.push(names), true) });
    const refused = (r: Inode) => v.sameName(r).then(() => false, (e: unknown) => e instanceof FsError && e.errno === E.ESTALE);
    const soon = () => performance.now() + 60_000;
    const gone = () => performance.now() - 1;
    const cases: { what: string; given: "before" | "after"; changed: boolean; late: boolean; until: () => number; settled: boolean; refused: boolean }[] = [
      { what: "given before the change was heard", given: "before", changed: true, late: false, until: soon, settled: false, refused: false },
      { what: "given after the change was heard (a reply that lost to its invalidation)", given: "after", changed: true, late: false, until: soon, settled: false, refused: true },
      { what: "given before for a file the change left alone (the name had left it before)", given: "before", changed: false, late: false, until: soon, settled: false, refused: true },
      { what: "given before, its change acknowledged before the kernel dropped it", given: "before", changed: true, late: true, until: soon, settled: false, refused: true },
      { what: "given before, its mark's time over (the process stalled) and the kernel's drop not seen in time", given: "before", changed: true, late: false, until: gone, settled: false, refused: true },
      { what: "given before, its mark's time over but the kernel's drop seen in time", given: "before", changed: true, late: false, until: gone, settled: true, refused: false },
    ];
    for (const [i, k] of cases.entries()) {
      const ino = 40 + i;
      const p = `p${i}`;
      if (k.given === "before") v.told(DIR, p, rec(ino, "g", p));
      // Another node swaps p with q: the kernel holds p for ino; this node hears it.
      if (k.given === "after") v.told(DIR, p, rec(ino, "g", p));
      const marks = v.racing([[DIR, p]], new Set(k.changed ? [ino, 99] : [99]), k.until());
      if (k.given === "after") v.told(DIR, p, rec(ino, "g", p));
      if (k.late) v.late(marks);
      if (k.settled) v.settled(marks);
      const now = rec(ino, "g", `q${i}`);
      v.told(DIR, `q${i}`, now);
      expect([k.what, await refused(now)]).toEqual([k.what, k.refused]);
    }
    // Only refused files' names were dropped (each file's every name); the raced one stays until its change's own drop takes it.
    expect(forgot).toEqual([1, 2, 3, 4].map((i) => [[DIR, `p${i}`], [DIR, `q${i}`]]));
  });

  test("an open that read the record between the change's commit and its message waits to hear it: raced, it goes on; heard not waiting for this node, or not heard in time, it is refused", async () => {
    const v = createKernelView({ open: { inode: () => undefined } as unknown as OpenFiles, forgetNames: async () => true });
    const open = (ino: number) => v.sameName(rec(ino, "g", "q")).then((r) => r.name, (e: unknown) => (e instanceof FsError && e.errno === E.ESTALE ? "ESTALE" : Promise.reject(e)));
    /** What p's answer is once the tasks and replies queued now have run. */
    const soon = (p: Promise<string>) => Promise.race([p, new Promise<string>((r) => setImmediate(() => r("waiting")))]);
    const hear = (ino: number, until: number | undefined) => {
      v.racing([[DIR, "p"]], new Set([ino]), until);
      v.heard([ino]);
    };
    v.told(DIR, "p", rec(50, "g", "p"));
    let opening = open(50);
    expect(await soon(opening)).toBe("waiting");
    hear(50, performance.now() + 60_000);
    expect(await opening).toBe("q");
    v.told(DIR, "p", rec(51, "g", "p"));
    opening = open(51);
    expect(await soon(opening)).toBe("waiting");
    hear(51, undefined);
    expect(await opening).toBe("ESTALE");
    // Never heard: refused once the wait is over.
    v.told(DIR, "p", rec(52, "g", "p"));
    opening = open(52);
    expect(await soon(opening)).toBe("waiting");
    expect(await opening).toBe("ESTALE");
    // A change heard already that does not wait for this node: refused without waiting.
    v.told(DIR, "p", rec(53, "g", "p"));
    hear(53, undefined);
    expect(await soon(open(53))).toBe("ESTALE");
  });

  test("attributes handed to the shim are not counted as told: a newer version still refreshes the kernel at open; an inode told nothing of is watched from then on", () => {
    view.told(DIR, "f21", rec(21));
    const newer = { ...rec(21), version: 8, size: 99 };
    expect(view.given(newer)?.size).toBe(99);
    expect(view.mayBeStale(21, 8)).toBe(true);
    expect(view.permsChanged({ ...newer, mode: 0o100600 })).toBe(true);
    // Never told: watched (a change elsewhere reaches the kernel), what it holds unknown.
    expect(view.changedElsewhere(22)).toBe(false);
    expect(view.given(rec(22))).toBeDefined();
    expect(view.changedElsewhere(22)).toBe(true);
    expect(view.mayBeStale(22, 7)).toBe(true);
    // Known as another file: the shim must not answer for it.
    expect(view.given(rec(21, "another"))).toBeUndefined();
  });

  // Found by a stress (helper-94): a node read a file empty right after another node's close of it
  // returned. A prefetch had handed the shim the file's empty version (its O_TRUNC open's), the
  // shim gave it to the kernel, and a second prefetch handed over the closed version before the
  // open: counted as told, it made the open skip the kernel's refresh.
  test("a prefetched name's attributes of another version than the kernel was told leave which one it holds unknown: the next open refreshes it, a later prefetch of that version too", () => {
    view.told(DIR, "f21", rec(21));
    view.told(DIR, "f21", { ...rec(21), version: 8, size: 0 });
    view.told(DIR, "f21", { ...rec(21), version: 9, size: 6602 });
    expect(view.mayBeStale(21, 9)).toBe(true);
    view.refreshed(21, 9);
    expect(view.mayBeStale(21, 9)).toBe(false);
    // The same version again: the kernel holds it whichever it took.
    view.told(DIR, "f21", { ...rec(21), version: 9, size: 6602 });
    expect(view.mayBeStale(21, 9)).toBe(false);
  });

  test("a version a writer here made from the one the kernel had is not stale at the next open; another node's version, or one made over another, still is", () => {
    // The writer's create: the kernel is told version 7 and opens it.
    view.told(DIR, "f21", rec(21));
    expect(view.opened(21, 7)).toBe(false);
    view.wroteHere(21, 7, 8);
    expect(view.versionOf(21)).toBe(8);
    expect(view.mayBeStale(21, 8)).toBe(false);
    // Its pages are still dropped at that open: the writer's bytes may have gone around the page cache (passthrough).
    expect(view.opened(21, 8)).toBe(false);
    // Another node's version after it: stale.
    expect(view.mayBeStale(21, 9)).toBe(true);
    // The kernel told another version meanwhile: the write is not taken as made from what it holds.
    view.told(DIR, "f22", rec(22));
    view.attr({ ...rec(22), version: 5 });
    view.wroteHere(22, 7, 8);
    expect(view.versionOf(22)).toBe(5);
    expect(view.mayBeStale(22, 8)).toBe(true);
    // Opened last at another version than the one the writer began from: a reply of that one may be on its way.
    view.told(DIR, "f23", rec(23));
    view.opened(23, 6);
    view.wroteHere(23, 7, 8);
    expect(view.mayBeStale(23, 8)).toBe(true);
  });

  test("an inode given to the kernel again goes to the back: the one given least lately goes first", () => {
    for (let ino = 21; ino <= 30; ino++) view.told(DIR, `f${ino}`, rec(ino));
    view.attr(rec(21));
    view.told(DIR, "f31", rec(31));
    expect(droppedInodes).toEqual([22]);
    expect(view.changedElsewhere(21)).toBe(true);
  });
});
