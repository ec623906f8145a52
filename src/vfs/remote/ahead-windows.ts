import type { CopyCache } from "../../cache/copy-cache.ts";

/**
 * A directory's window starts at all the room the cache gives read-ahead (a directory that fits is
 * fetched whole, in name order or not; at least WINDOW_START), grows by each byte fetched ahead that is opened and shrinks by
 * PENALTY for each byte evicted unopened, so that it settles where at least PENALTY / (PENALTY + 1)
 * of what is fetched ahead gets read (a reader in listing order widens it to the cache's limit, one
 * in random order over more than the cache holds keeps it near the floor); never below WINDOW_MIN,
 * so that a reader turning sequential again is noticed.
 */
const WINDOW_START = 1 << 20;
const WINDOW_MIN = 128 << 10;
const PENALTY = 4;
/** Directories whose windows are remembered; past this they start again. */
const DIRS_MAX = 10_000;

/** How much of each directory to fetch ahead of its readers: bounded by what they used of it. */
export interface AheadWindows<T> {
  /** Bytes dir may fetch ahead now: its window less its copies not opened yet, within the cache's room for them. */
  room(dir: number): number;
  /** Half its window is free: time to fetch the next files while these are being read. */
  drained(dir: number): boolean;
  /** ino (size bytes, of dir) is being fetched ahead; ctx comes back at its first open. */
  fetching(ino: number, version: number, dir: number, size: number, ctx: T): void;
  /** Its copy did not arrive. */
  failed(ino: number): void;
  /** Its copy arrived: from now on its eviction before an open counts against its directory. */
  arrived(ino: number): void;
  /** The first open of a copy fetched ahead: its directory's window grows; its ctx (undefined: not one fetched here). */
  used(ino: number): T | undefined;
}

interface Window {
  bytes: number;
  /** Bytes of its copies fetched ahead (or on their way) and not opened. */
  waiting: number;
}

interface Ahead<T> {
  version: number;
  dir: number;
  size: number;
  arrived: boolean;
  ctx: T;
}

export function createAheadWindows<T>(cache: CopyCache): AheadWindows<T> {
  const windows = new Map<number, Window>();
  const ahead = new Map<number, Ahead<T>>();
  let seenUnread = cache.ahead().evictedUnread;

  function windowOf(dir: number): Window {
    let w = windows.get(dir);
    if (!w) {
      if (windows.size >= DIRS_MAX) for (const [d, x] of windows) if (!x.waiting) windows.delete(d);
      windows.set(dir, (w = { bytes: Math.max(WINDOW_START, cache.ahead().limit), waiting: 0 }));
    }
    return w;
  }

  function forget(ino: number, a: Ahead<T>): Window {
    ahead.delete(ino);
    const w = windowOf(a.dir);
    w.waiting -= a.size;
    return w;
  }

  /** The cache evicted copies fetched ahead before anyone opened them: their directories' windows pay. */
  function settle(): void {
    const unread = cache.ahead().evictedUnread;
    if (unread === seenUnread) return;
    seenUnread = unread;
    for (const [ino, a] of ahead) {
      if (!a.arrived || cache.versionOf(ino) === a.version) continue;
      const w = forget(ino, a);
      w.bytes = Math.max(WINDOW_MIN, w.bytes - PENALTY * a.size);
    }
  }

  function room(dir: number): number {
    settle();
    const w = windowOf(dir);
    const c = cache.ahead();
    w.bytes = Math.min(w.bytes, Math.max(WINDOW_MIN, c.limit));
    return Math.min(w.bytes - w.waiting, c.limit - c.bytes);
  }

  return {
    room,
    drained: (dir) => room(dir) >= windowOf(dir).bytes / 2,
    fetching(ino, version, dir, size, ctx) {
      ahead.set(ino, { version, dir, size, arrived: false, ctx });
      windowOf(dir).waiting += size;
    },
    failed(ino) {
      const a = ahead.get(ino);
      if (a) forget(ino, a);
    },
    arrived(ino) {
      const a = ahead.get(ino);
      if (a) a.arrived = true;
    },
    used(ino) {
      const a = ahead.get(ino);
      if (!a) return undefined;
      forget(ino, a).bytes += a.size;
      return a.ctx;
    },
  };
}
