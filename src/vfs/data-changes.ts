/**
 * Waits for another node to publish new bytes of an inode (its write's close), woken by the change
 * feed. A waiter is registered before the try it follows, so a change that comes meanwhile is not missed.
 */
export interface DataChanges {
  next(ino: number): { wait(ms: number): Promise<void>; cancel(): void };
  /** Whether ino changes from now until cancel (a record read meanwhile may be older than the change). */
  watch(ino: number): { changed(): boolean; cancel(): void };
  /** These inodes changed: wake whoever waits for them. */
  changed(inos: Iterable<number>): void;
}

export function createDataChanges(): DataChanges {
  const waiters = new Map<number, Set<() => void>>();
  /** fire on ino's next change, until the returned function takes it off. */
  function on(ino: number, fire: () => void): () => void {
    let set = waiters.get(ino);
    if (!set) waiters.set(ino, (set = new Set()));
    set.add(fire);
    return () => {
      set.delete(fire);
      if (!set.size && waiters.get(ino) === set) waiters.delete(ino);
    };
  }
  return {
    watch(ino) {
      let seen = false;
      const off = on(ino, () => void (seen = true));
      return { changed: () => seen, cancel: off };
    },
    next(ino) {
      let fire!: () => void;
      const changed = new Promise<void>((res) => (fire = res));
      const off = on(ino, fire);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const cancel = () => {
        clearTimeout(timer);
        off();
        fire();
      };
      return {
        wait: (ms) => Promise.race([changed, new Promise<void>((res) => (timer = setTimeout(res, Math.max(0, ms))))]),
        cancel,
      };
    },
    changed(inos) {
      for (const ino of inos) for (const w of waiters.get(ino) ?? []) w();
    },
  };
}
