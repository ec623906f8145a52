/**
 * An async lock many may hold shared, or one alone. Fair: one waiting to hold it alone goes before
 * those who ask to share it after it (a stream of sharers never keeps it out).
 */
export interface RwLock {
  shared<T>(fn: () => Promise<T>): Promise<T>;
  exclusive<T>(fn: () => Promise<T>): Promise<T>;
}

export function createRwLock(): RwLock {
  let sharers = 0;
  let alone = false;
  const waiting: { exclusive: boolean; go: () => void }[] = [];

  function admit(): void {
    for (let next = waiting[0]; next; next = waiting[0]) {
      if (alone || (next.exclusive && sharers > 0)) return;
      waiting.shift();
      if (next.exclusive) alone = true;
      else sharers++;
      next.go();
      if (next.exclusive) return;
    }
  }

  async function run<T>(exclusive: boolean, fn: () => Promise<T>): Promise<T> {
    if (!alone && !waiting.length && (!exclusive || sharers === 0)) {
      if (exclusive) alone = true;
      else sharers++;
    } else await new Promise<void>((go) => waiting.push({ exclusive, go }));
    try {
      return await fn();
    } finally {
      if (exclusive) alone = false;
      else sharers--;
      admit();
    }
  }

  return { shared: (fn) => run(false, fn), exclusive: (fn) => run(true, fn) };
}
