/** A set that keeps its newest `cap` members: for hints, where forgetting one costs only a lost shortcut. */
export interface RecentSet<T> {
  add(v: T): void;
  has(v: T): boolean;
}

export function createRecentSet<T>(cap: number): RecentSet<T> {
  // A Map iterates in insertion order: its first key is the oldest (re-adding moves a member to the end).
  const m = new Map<T, true>();
  return {
    add(v) {
      m.delete(v);
      m.set(v, true);
      if (m.size > cap) m.delete(m.keys().next().value as T);
    },
    has: (v) => m.has(v),
  };
}
