/**
 * Tasks run one at a time per key, each after the one asked for before it (whether that failed or
 * not); tasks of different keys run at once. A key with nothing queued holds nothing.
 */
export interface KeyedQueue<K> {
  run<T>(key: K, fn: () => Promise<T>): Promise<T>;
}

export function createKeyedQueue<K>(): KeyedQueue<K> {
  /** The last task asked for of each key, settled however it ends. */
  const last = new Map<K, Promise<unknown>>();
  return {
    run(key, fn) {
      const run = (last.get(key) ?? Promise.resolve()).catch(() => {}).then(fn);
      const tail = run.finally(() => {
        if (last.get(key) === tail) last.delete(key);
      });
      // Its failure is the caller's, through run.
      tail.catch(() => {});
      last.set(key, tail);
      return run;
    },
  };
}
