import type { Created, MetadataStore, NewInode, NewName } from "../meta/store.ts";

/** Longest a create waits here for its file's first data before it goes alone. */
export const HOLD_MS = 100;

/** Store calls that neither read nor change the store: no held create needs to go before them. */
const LOCAL: ReadonlySet<PropertyKey> = new Set<keyof MetadataStore>(["watchesHold", "onWatchesHold"]);

/** What the held creates are: whether one is of ino, or in directory ino; whether one is of this name. */
interface HeldNames {
  inode(ino: number): boolean;
  name(parent: number, name: string): boolean;
}

/**
 * Reads whose answer depends on no create but those of the inodes and names they ask of: they go
 * ahead of the held creates unless they ask of one (a task's lookup of its output's name, its reads
 * of other nodes' files, must not send its sibling tasks' creates alone, before their data).
 */
const READS: Partial<Record<keyof MetadataStore, (h: HeldNames, args: unknown[]) => boolean>> = {
  lookup: (h, [parent, name]) => h.name(parent as number, name as string),
  get: (h, [ino]) => h.inode(ino as number),
  recordAndHolders: (h, [ino]) => h.inode(ino as number),
  getMany: (h, [inos]) => (inos as number[]).some((ino) => h.inode(ino)),
  recordsAndHolders: (h, [inos]) => (inos as number[]).some((ino) => h.inode(ino)),
  heldBy: (h, [, copies]) => (copies as { ino: number }[]).some((c) => h.inode(c.ino)),
};

/** A new file's first data, as its first publish has it. */
export interface FirstData {
  size: number;
  mtime: bigint;
  ctime: bigint;
  version: number;
  /** Its path now (the name replaced, if another node made it meanwhile). */
  path: string;
}

/**
 * Creates written behind wait here for their file's first publish (its close, most often within a
 * millisecond) and go to the store with it: one script, one round trip and one change message for a
 * small file instead of two.
 *
 * Redis applies a node's commands in the order they are sent, and every other call this node makes
 * to the store (through `store`) sends the creates held first: to the store and to every reader of
 * it, each file was made before whatever this node did next. A read that asks of none of them (READS)
 * goes ahead: nobody but this node sees its answer, which they cannot change. A create sent with its
 * data overtakes the creates still held, which are of other names and other inodes. A create held
 * HOLD_MS goes without its data: a file written for long is seen by the other nodes (not its size:
 * close-to-open) meanwhile. Creates sent in one turn of the event loop go as one call (createMany),
 * still before anything this node sends after them.
 */
export interface HeldCreates {
  /** The store as this node's filesystem uses it: each call but a local one sends the held creates first. */
  readonly store: MetadataStore;
  /** Hold ino's create; resolves with the store's answer once it was sent and answered. */
  hold(ino: number, parent: number, name: string, init: NewInode): Promise<Created>;
  /**
   * Send ino's create now if it is held, with the file's first data if given; its answer resolves
   * hold's promise and is returned. Undefined when it is not held (sent already).
   */
  send(ino: number, first?: FirstData): Promise<Created> | undefined;
  /** Send every held create now. */
  flush(): void;
}

interface Held {
  parent: number;
  name: string;
  init: NewInode;
  at: number;
  answer: PromiseWithResolvers<Created>;
}

/**
 * wholeTurn: the creates sent go at the end of the event loop's turn, not of the microtask sweep: a
 * sole node's batch of closes, each published behind the one before, goes as one call (no close
 * waits for it); on a node of a cluster a close waits for its create, which then goes at once.
 */
export function createHeldCreates(raw: MetadataStore, holdMs = HOLD_MS, wholeTurn = false): HeldCreates {
  /** In the order held, the oldest first. */
  const held = new Map<number, Held>();
  /** The held create of each name (parent/name): a second create of it sends the first one before. */
  const names = new Map<string, number>();
  /** How many held creates each directory has. */
  const parents = new Map<number, number>();
  const heldNames: HeldNames = {
    inode: (ino) => held.has(ino) || parents.has(ino),
    name: (parent, name) => names.has(`${parent}/${name}`),
  };
  let timer: ReturnType<typeof setTimeout> | undefined;

  /**
   * Creates taken out of held and not sent yet: they go at the end of this turn as one call
   * (createMany: a batch of closes a sole node's shim answered, closes that came together; see
   * wholeTurn), or before any other call this node makes, whichever is first.
   */
  let outgoing: { c: NewName; answer: PromiseWithResolvers<Created> }[] = [];

  function sendOutgoing(): void {
    const batch = outgoing;
    if (!batch.length) return;
    outgoing = [];
    if (batch.length === 1) {
      const { c, answer } = batch[0]!;
      return void answer.resolve(raw.create(c.parent, c.name, c.init));
    }
    const all = raw.createMany(batch.map((o) => o.c));
    batch.forEach((o, i) =>
      o.answer.resolve(
        all.then((out) => {
          const r = out[i]!;
          if (r instanceof Error) throw r;
          return r;
        }),
      ),
    );
  }

  function sendHeld(ino: number, h: Held, first?: FirstData): Promise<Created> {
    held.delete(ino);
    names.delete(`${h.parent}/${h.name}`);
    const n = parents.get(h.parent)!;
    if (n > 1) parents.set(h.parent, n - 1);
    else parents.delete(h.parent);
    const init: NewInode = first
      ? { ...h.init, size: first.size, mtime: first.mtime, changed: first.ctime, version: first.version, ...(h.init.replace !== undefined ? { replace: first.path } : {}) }
      : h.init;
    if (!outgoing.length) (wholeTurn ? setImmediate : queueMicrotask)(sendOutgoing);
    outgoing.push({ c: { parent: h.parent, name: h.name, init }, answer: h.answer });
    return h.answer.promise;
  }

  function flush(): void {
    for (const [ino, h] of held) sendHeld(ino, h);
    sendOutgoing();
  }

  function due(): void {
    timer = undefined;
    const before = performance.now() - holdMs;
    for (const [ino, h] of held) {
      if (h.at > before) break;
      sendHeld(ino, h);
    }
    const next = held.values().next();
    if (!next.done) arm(next.value.at + holdMs - performance.now());
  }

  function arm(ms: number): void {
    timer = setTimeout(due, Math.max(ms, 1));
    // Never what keeps the process up: its shutdown sends what is held (closeAll).
    timer.unref?.();
  }

  const guarded = new Map<PropertyKey, unknown>();
  const store = new Proxy(raw, {
    get(target, prop) {
      const v: unknown = Reflect.get(target, prop, target);
      if (typeof v !== "function" || LOCAL.has(prop)) return v;
      let g = guarded.get(prop);
      if (!g) {
        const fn = v as (...a: unknown[]) => unknown;
        const read = READS[prop as keyof MetadataStore];
        g = (...args: unknown[]) => {
          if (held.size && (!read || read(heldNames, args))) flush();
          sendOutgoing();
          return fn.apply(target, args);
        };
        guarded.set(prop, g);
      }
      return g;
    },
  });

  return {
    store,
    hold(ino, parent, name, init) {
      const key = `${parent}/${name}`;
      const earlier = names.get(key);
      if (earlier !== undefined) sendHeld(earlier, held.get(earlier)!);
      const h: Held = { parent, name, init, at: performance.now(), answer: Promise.withResolvers<Created>() };
      held.set(ino, h);
      names.set(key, ino);
      parents.set(parent, (parents.get(parent) ?? 0) + 1);
      if (!timer) arm(holdMs);
      return h.answer.promise;
    },
    send(ino, first) {
      const h = held.get(ino);
      return h && sendHeld(ino, h, first);
    },
    flush,
  };
}
