/**
 * One at a time per key, by entering and leaving rather than by a task (see KeyedQueue): for a
 * section that ends somewhere other than where it began. Keys nobody is in hold nothing.
 */
export interface Turnstile<K> {
  /** Resolves once every caller before this one for key has left; call the function returned to leave (once; again does nothing). */
  enter(key: K): Promise<() => void>;
}

export function createTurnstile<K>(): Turnstile<K> {
  /** The leaving of the last caller to enter each key. */
  const last = new Map<K, Promise<void>>();
  return {
    async enter(key) {
      let leave!: () => void;
      const left = new Promise<void>((r) => (leave = r));
      const before = last.get(key);
      last.set(key, left);
      await before;
      let gone = false;
      return () => {
        if (gone) return;
        gone = true;
        if (last.get(key) === left) last.delete(key);
        leave();
      };
    },
  };
}
