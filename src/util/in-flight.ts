/**
 * One run at a time of a task per key: callers asking while it runs share its outcome; once it
 * settles, the next caller starts it again.
 */
export interface InFlight<K> {
  run(key: K, fn: () => Promise<void>): Promise<void>;
}

export function createInFlight<K>(): InFlight<K> {
  const runs = new Map<K, Promise<void>>();
  return {
    run(key, fn) {
      let p = runs.get(key);
      if (!p) {
        p = fn().finally(() => runs.delete(key));
        runs.set(key, p);
      }
      return p;
    },
  };
}
