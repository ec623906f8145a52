import type { Inode, Invalidation, MetadataStore } from "../meta/store.ts";
import { E, errnoOf } from "../util/errno.ts";
import { withNameAdded } from "./attr.ts";

/**
 * Asked at most this many times: an inode changed elsewhere on every try goes as the last answer
 * had it (the message of its next change drops it wherever it went).
 */
const TRIES = 8;
/** Inodes and names marked changed, at most: past it, every answer on its way is asked again. */
const MARKED_MAX = 100_000;

/**
 * The store, whose answers are never older than a change this node heard before taking them in.
 * Redis answers a call, another node changes what it answered, and the change's message (on the
 * feed's own connection) can reach this node first: the caches drop what the change made stale,
 * then the answer would bring it back, and the kernel keep it for its attribute timeout. Such an
 * answer is asked for again (as NFS clients compare an inode's invalidations with a reply's).
 */
export interface CurrentAnswers {
  readonly store: MetadataStore;
  /** Another node's change reached this node: answers asked before it that it touches are asked again. */
  heard(inv: Invalidation): void;
  /** Changes may have been missed (the feed was down): every answer on its way is asked again. */
  missed(): void;
  /**
   * This node changed ino before the store has it (written behind, sent after calls still on their
   * way): answers asked before it are asked again, after the change.
   */
  changedHere(ino: number): void;
}

export function createCurrentAnswers(raw: MetadataStore): CurrentAnswers {
  /** Counts changes heard: a call's answer is as of the count when it was asked. */
  let heardCount = 0;
  /** Answers asked before this count are asked again (marks were dropped, or changes missed). */
  let floor = 0;
  /** When each inode last changed (other than by a name added in it). */
  const changed = new Map<number, number>();
  /** Directories whose last change heard was a name added: when, and the times and link count it left. */
  const touched = new Map<number, { at: number; ctime: bigint; nlink: number }>();
  /** When each name (parent/name) last came or went. */
  const names = new Map<string, number>();

  const stale = (asked: number, ino: number) => asked < floor || (changed.get(ino) ?? 0) > asked;
  /**
   * r, brought up to a name added in it since it was asked: a directory's ctime moves forward with
   * each change, and nothing else of it changed (see Invalidation.touched).
   */
  function caughtUp(asked: number, r: Inode): Inode {
    const t = touched.get(r.ino);
    return t && t.at > asked && t.ctime > r.ctime ? withNameAdded(r, t.ctime, t.nlink) : r;
  }

  /** ask's answer, asked again while one of its records is stale (staleOf), then caught up (fix). */
  async function current<T>(ask: () => Promise<T>, staleOf: (asked: number, got: T) => boolean, fix: (asked: number, got: T) => T): Promise<T> {
    for (let tries = 1; ; tries++) {
      const asked = heardCount;
      const got = await ask();
      if (tries === TRIES || !staleOf(asked, got)) return fix(asked, got);
    }
  }

  /** Many records in one call: the stale ones asked for again, together. */
  async function currentMany<T>(inos: number[], ask: (inos: number[]) => Promise<(T | undefined)[]>, inoOf: (got: T) => number, fix: (asked: number, got: T) => T, tries = 1): Promise<(T | undefined)[]> {
    const asked = heardCount;
    const got = await ask(inos);
    const again = tries < TRIES ? inos.flatMap((_, i) => (got[i] !== undefined && stale(asked, inoOf(got[i]!)) ? [i] : [])) : [];
    const out = got.map((g) => g && fix(asked, g));
    if (again.length) (await currentMany(again.map((i) => inos[i]!), ask, inoOf, fix, tries + 1)).forEach((g, k) => (out[again[k]!] = g));
    return out;
  }

  const get = (ino: number) => current(() => raw.get(ino), (asked, r) => stale(asked, r.ino), caughtUp);
  /**
   * A change's answer: its record read again if another node's change crossed it. Gone by then (a
   * later create of the name replaced the file, an unlink), the change's own answer: it was made,
   * and what removed it since is heard like any change.
   */
  async function changedBy<T extends Inode>(change: () => Promise<T>): Promise<T> {
    const asked = heardCount;
    return changedSince(asked, await change());
  }
  async function changedSince<T extends Inode>(asked: number, r: T): Promise<T> {
    if (!stale(asked, r.ino)) return caughtUp(asked, r) as T;
    const now = await get(r.ino).catch((e: unknown) => {
      if (errnoOf(e) === E.ENOENT) return undefined;
      throw e;
    });
    return now ? { ...r, ...now } : r;
  }
  const caughtUpWith = <T extends { r: Inode }>(asked: number, got: T): T => ({ ...got, r: caughtUp(asked, got.r) });

  const overrides: Partial<MetadataStore> = {
    get,
    getMany: (inos) => currentMany(inos, (i) => raw.getMany(i), (r) => r.ino, caughtUp),
    lookup: (parent, name) =>
      current(
        () => raw.lookup(parent, name),
        (asked, r) => stale(asked, r.ino) || (names.get(`${parent}/${name}`) ?? 0) > asked,
        caughtUp,
      ),
    recordAndHolders: (ino, watch) => current(() => raw.recordAndHolders(ino, watch), (asked, got) => stale(asked, got.r.ino), caughtUpWith),
    recordsAndHolders: (inos, watch) => currentMany(inos, (i) => raw.recordsAndHolders(i, watch), (got) => got.r.ino, caughtUpWith),
    setAttrs: (ino, change) => changedBy(() => raw.setAttrs(ino, change)),
    setData: (...args) => changedBy(() => raw.setData(...args)),
    create: (...args) => changedBy(() => raw.create(...args)),
    async createMany(creates) {
      const asked = heardCount;
      const out = await raw.createMany(creates);
      return Promise.all(out.map((r) => (r instanceof Error ? r : changedSince(asked, r).catch((e: unknown) => e as Error))));
    },
    async link(...args) {
      const asked = heardCount;
      const l = await raw.link(...args);
      return { ...l, record: stale(asked, l.record.ino) ? await get(l.record.ino) : caughtUp(asked, l.record) };
    },
  };
  const store = new Proxy(raw, {
    get: (target, prop) => (Object.hasOwn(overrides, prop) ? overrides[prop as keyof MetadataStore] : Reflect.get(target, prop, target)),
  });

  /** Past MARKED_MAX marks, every one goes (forgetMarks). */
  function keepBounded(): void {
    if (changed.size + touched.size + names.size > MARKED_MAX) forgetMarks();
  }

  /** Every mark goes: answers asked before now are asked again. */
  function forgetMarks(): void {
    changed.clear();
    touched.clear();
    names.clear();
    floor = heardCount;
  }

  return {
    store,
    heard(inv) {
      const at = ++heardCount;
      const onlyAdded = new Map(inv.touched?.map(([dir, ctime, nlink]) => [dir, { at, ctime: BigInt(ctime), nlink }]));
      for (const ino of inv.inodes) {
        const t = onlyAdded.get(ino);
        if (t) touched.set(ino, t);
        else changed.set(ino, at);
      }
      for (const ino of inv.data) changed.set(ino, at);
      for (const [dir, name] of [...inv.added, ...inv.removed]) names.set(`${dir}/${name}`, at);
      keepBounded();
    },
    missed() {
      heardCount++;
      forgetMarks();
    },
    changedHere(ino) {
      changed.set(ino, ++heardCount);
      keepBounded();
    },
  };
}
