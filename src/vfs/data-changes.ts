/**
 * Waits for another node to publish new bytes of an inode (its write's close), woken by the change
 * feed. A waiter is registered before the try it follows, so a change that comes meanwhile is not missed.
 */
export interface DataChanges {
  next(ino: number): { wait(ms: number): Promise<void>; cancel(): void };
  /** These inodes changed: wake whoever waits for them. */
  changed(inos: Iterable<number>): void;
}

export function createDataChanges(): DataChanges {
  const waiters = new Map<number, Set<() => void>>();
  return {
    next(ino) {
      let fire!: () => void;
      const changed = new Promise<void>((res) => (fire = res));
      let set = waiters.get(ino);
      if (!set) waiters.set(ino, (set = new Set()));
      set.add(fire);
      let timer: ReturnType<typeof setTimeout> | undefined;
      const cancel = () => {
        clearTimeout(timer);
        set.delete(fire);
        if (!set.size && waiters.get(ino) === set) waiters.delete(ino);
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
