import * as fs from "node:fs";
import type { Attr } from "../fuse/types.ts";
import { WATCH_PROOF_MS } from "../meta/change-outbox.ts";
import type { Inode } from "../meta/store.ts";
import { E, FsError } from "../util/errno.ts";
import { changeTime } from "../util/time.ts";
import { attrOf } from "./attr.ts";
import type { Handle, OpenFiles } from "./open-files.ts";

/**
 * What this node's kernel was told of each inode (it caches attributes, names and pages): the
 * attributes of every reply are made here, so the kernel's view stays consistent with the bytes the
 * open handles serve, and a reused inode number is noticed.
 */
export interface KernelView {
  /** Attributes for a name's reply (or one the shim may give later): the kernel will know r.ino under it. */
  told(parent: number, name: string, r: Inode): Attr;
  /**
   * told, for an entry reply JS sends next: until it lands, an invalidation of r.ino that finds
   * nothing in the kernel is tried again (a change heard between now and the reply, see notify.c).
   */
  answering(parent: number, name: string, r: Inode): Attr;
  /** The shim told the kernel of r as parent/name itself (a file it made): noted as told, its attributes not worked out again. */
  toldByShim(parent: number, name: string, r: Inode): void;
  /** Attributes of r as the kernel must see them now (a writer's live size; a reader's version). */
  attr(r: Inode): Attr;
  /**
   * Attributes of r for the shim to give the kernel later, unless the kernel knows r's number as
   * another file (sameFile refuses that: the shim must not answer it). Not counted as told (the shim
   * may never give them): what the kernel was told stays as it was, so every check that compares with
   * it still fires; an inode the kernel was told nothing of is watched from now on, its version and
   * owner unknown.
   */
  given(r: Inode): Attr | undefined;
  /** r, unless its number is another file's than the one the kernel knows (ESTALE then). */
  sameFile(r: Inode): Inode;
  /**
   * r, unless the kernel was given it under a name it no longer has: those names are dropped from the
   * kernel, then ESTALE (the kernel looks up again the name it opened by). A name another node renamed
   * can outlive its invalidation in the kernel: a reply naming it (a listing, a lookup) that the
   * kernel takes in just after. Opened through such a name, a create (O_TRUNC) would empty the file
   * that moved away. The open does not say which name it came by, so every name the kernel was given
   * counts, not only the last: it may hold the new one and the old one at once. Every name it was
   * given goes with a refusal, and until it is given one again every open of r is refused: one that
   * walked the old name before the kernel dropped it may come after (three processes opening it at
   * once; the first refused). Files of several names are let be. A name that raced its change (see
   * racing) is let be too; one that no change heard here took yet waits to hear one (r was read from
   * the store between the change's commit and its message) for at most HEAR_WAIT_MS.
   */
  sameName(r: Inode): Promise<Inode>;
  /**
   * Another node's change of these names and of the inodes changed was heard, and waits for this
   * node's acknowledgement, which goes once the kernel has dropped the names. A name given before now
   * for one of those inodes can only have reached the kernel before that drop (the reply went first,
   * and the drop waits for the lookup or listing that takes it in), so an open by it walked its path
   * before the change returned: it raced the change and may open the file, as if it came first (a
   * reader of names another node swaps every few ms is not refused twice in a row, which the kernel
   * passes on as ESTALE). A name given for an inode the change left alone had left it before (a
   * reply that lost to that earlier change's drop): not marked. A mark counts until `until`
   * (performance.now()), by the clock at each open (a stalled process must not stretch it), and from
   * then on only if settled: the kernel dropped the names by then. until undefined: the change does
   * not wait for this node (or its feed is not shown current); its names are noted as taken, and an
   * open by them is refused at once. Returns the marks made.
   */
  racing(names: Iterable<readonly [number, string, number?]>, changed: ReadonlySet<number>, until: number | undefined): RaceMarks;
  /** Another node's change of these inodes was heard, and learnt by the caches (opens waiting for it go on: see sameName). */
  heard(inos: Iterable<number>): void;
  /** The kernel dropped the names marked: their marks count from now on, as long as they stand. */
  settled(marks: RaceMarks): void;
  /** Acknowledged before the kernel dropped the names marked: an open by them may come after their change returned, and is refused again. */
  late(marks: RaceMarks): void;
  /** This node renamed ino from a name: the kernel moved its name itself. */
  moved(ino: number, from: { parent: number; name: string }, parent: number, name: string): void;
  /** This node removed a name of ino (unlink, or a rename over it): the kernel dropped it itself. */
  unnamed(ino: number, parent: number, name: string): void;
  /** Whether the kernel may hold attributes of another version than version (then refresh them). */
  mayBeStale(ino: number, version: number): boolean;
  /**
   * A writer here published its bytes as version to, over the version from the kernel was told: the
   * kernel made every change between itself (writes, truncates), so its size is to's, and no reply
   * it may still take in carries another version's (it discards those sent before its own writes).
   */
  wroteHere(ino: number, from: number, to: number): void;
  /** The kernel was refreshed to version. */
  refreshed(ino: number, version: number): void;
  /**
   * Another node changed ino: whether the kernel's attributes and pages of it must be dropped now
   * (only if it may hold them). Not while ino is open here: the kernel then gets the size of the
   * version the handles read, and an invalidation landing between the getattr of a read and its reply
   * makes the kernel throw the reply away and read on with the size it had before the open, filling
   * the bytes out with zeros or cutting them short. Held back to the last close (closed()); a change
   * of owner or mode goes at once (permsChanged()).
   */
  changedElsewhere(ino: number): boolean;
  /** The last handle of ino closed: whether a change held back must reach the kernel now. */
  closed(ino: number): boolean;
  /** Whether r's owner or mode may differ from what the kernel was told (a permission change not to hold back). */
  permsChanged(r: Inode): boolean;
  /**
   * Whether the kernel may hold the name parent/name (it was given it). Names it was refused are not
   * cached past the reply (an ENOENT answer leaves a dentry that is looked up again every time).
   */
  mayHaveEntry(parent: number, name: string): boolean;
  /**
   * Everything the kernel may cache, for it to drop (a change may have gone unheard): every name it
   * was given, forgotten here, and every inode whose attributes it may hold, those open here held
   * back to their last close (see changedElsewhere).
   */
  takeAll(): { names: [number, string][]; inodes: number[] };
  /** An open at version: whether the kernel's cached pages of ino stay valid (same version as the last open). */
  opened(ino: number, version: number): boolean;
  /** The version whose attributes the kernel was last given for ino (undefined: none; -1: not known which). */
  versionOf(ino: number): number | undefined;
  /** A handle of ino moved to version without an open (see FileOps.read): unless the last open's, the pages may be of two versions, and the next open drops them. */
  reread(ino: number, version: number): void;
}

/** A name's race mark: when the change was heard (on the names' count), and until when it counts unless settled. */
interface RaceMark {
  seq: number;
  /** -Infinity: taken by a change that does not wait for this node, never counts. */
  until: number;
  settled: boolean;
}

/** The marks one change made (see KernelView.racing): [inode, "parent/name", its mark]. */
export type RaceMarks = [number, string, RaceMark][];

/** Stands for a version the kernel may hold attributes of, not known which: never any file's. */
const UNKNOWN_VERSION = -1;

const permsOf = (r: Inode) => `${r.mode}:${r.uid}:${r.gid}`;

const splitKey = (k: string): [number, string] => {
  const slash = k.indexOf("/");
  return [Number(k.slice(0, slash)), k.slice(slash + 1)];
};

/**
 * Longest an open by a name that no change heard here took waits to hear one: past WATCH_PROOF_MS
 * after its publish a change marks nothing (its origin may stop waiting for this node).
 */
const HEAR_WAIT_MS = WATCH_PROOF_MS;

/** Inodes (and names) whose state is kept; past it the oldest tenth is dropped from the kernel and forgotten. */
const KEPT_MAX = 200_000;

/** What the kernel was told of one inode. */
interface Told {
  /** Identity of the file the number was (see gen in Inode). */
  gen: string;
  /** Data version of the attributes last given (the kernel caches them). */
  version: number;
  /** Owner and mode last given. */
  perms: string;
  /**
   * Attributes of another version than `version` were handed to the shim since (a prefetched
   * name's), which may have given them to the kernel: which version it holds is not known.
   */
  mixed?: true;
  /**
   * The names ("parent/name") it got the inode under (lookups, creates, readdirplus) and may still
   * hold, each with when it was last given (a count): a name given again while it was being dropped
   * from the kernel stays.
   */
  names: Map<string, number>;
  /** Names another node's change took while the kernel held them, with when this node heard it (on the names' count): see racing. */
  raced?: Map<string, RaceMark>;
  /** When an open of it was last refused (on the names' count), until it is given by a name since: see sameName. */
  refused?: number;
}

/**
 * dropKernelEntry: make the kernel forget a name; dropKernelInode: its attributes and pages of an
 * inode. refused: a reply of ESTALE for ino is on its way (the kernel looks the name up again: that
 * lookup must come here, not be answered from elsewhere). keptMax: see KEPT_MAX.
 */
export function createKernelView(o: {
  open: OpenFiles;
  dropKernelEntry?: (parent: number, name: string) => void;
  dropKernelInode?: (ino: number) => void;
  /** Make the kernel forget these names; resolves once it has (false: not in time). */
  forgetNames?: (names: [number, string][]) => Promise<boolean>;
  refused?: (ino: number) => void;
  /** An entry reply naming ino is on its way (KernelView.answering). */
  answering?: (ino: number) => void;
  /** The kernel is given (or may hold) attributes of ino at version (UNKNOWN_VERSION: not known which). */
  toldVersion?: (ino: number, version: number) => void;
  keptMax?: number;
}): KernelView {
  const max = o.keptMax ?? KEPT_MAX;
  /**
   * Per inode number, what the kernel was told. Another identity under the same number (handed out
   * again after Redis lost writes) means the kernel's inode is stale: ESTALE makes it look the name up
   * again instead of reading another file's bytes under it.
   */
  const told = new Map<number, Told>();
  let toldSeq = 0;
  /** Every name given to the kernel ("parent/name"), with the inode it was last given for. */
  const toldNames = new Map<string, number>();
  /** Inodes open here that other nodes changed since they were opened (see changedElsewhere). */
  const heldBack = new Set<number>();
  /** Data version of each inode when this node last opened it (for the kernel's page cache). */
  const openedVersion = new Map<number, number>();
  /** The last version a writer here published of each inode, and the one the kernel had before it (wroteHere). */
  const wrote = new Map<number, [from: number, to: number]>();
  /** Opens waiting to hear a change of an inode (see sameName). */
  const hearing = new Map<number, Set<() => void>>();

  /** Resolves once a change of ino is heard, or after ms. */
  function hearChange(ino: number, ms: number): Promise<void> {
    return new Promise((resolve) => {
      const waiting = hearing.get(ino) ?? new Set();
      hearing.set(ino, waiting);
      const done = () => {
        clearTimeout(timer);
        waiting.delete(done);
        if (!waiting.size && hearing.get(ino) === waiting) hearing.delete(ino);
        resolve();
      };
      const timer = setTimeout(done, ms);
      waiting.add(done);
    });
  }

  /** The kernel forgets a name, and this view with it. */
  function dropName(key: string): void {
    toldNames.delete(key);
    o.dropKernelEntry?.(...splitKey(key));
  }

  /** The kernel forgets the names it was last given for ino (one given since for another inode stays). */
  function dropNamesOf(ino: number, t: Told): void {
    for (const key of t.names.keys()) if (toldNames.get(key) === ino) dropName(key);
  }

  /**
   * Bounded by dropping the oldest (a Map iterates in insertion order) from the kernel too: what it
   * no longer holds needs no watching. Inodes open here stay (an invalidation under a read can cut
   * it short, see changedElsewhere): they go to the back.
   */
  function roomForInode(): void {
    if (told.size < max) return;
    let n = Math.max(1, Math.floor(max / 10));
    // Each at most once: the open ones come round again at the back.
    let visits = told.size;
    for (const [ino, t] of told) {
      if (n === 0 || visits-- === 0) break;
      told.delete(ino);
      if (o.open.inode(ino)) {
        told.set(ino, t);
        continue;
      }
      n--;
      dropNamesOf(ino, t);
      o.dropKernelInode?.(ino);
    }
  }

  function roomForName(): void {
    if (toldNames.size < max) return;
    let n = Math.max(1, Math.floor(max / 10));
    for (const key of toldNames.keys()) {
      if (n-- === 0) break;
      dropName(key);
    }
  }

  function changedElsewhere(ino: number): boolean {
    if (!(ino === 1 || told.has(ino))) return false;
    if (!o.open.inode(ino)) return true;
    heldBack.add(ino);
    return false;
  }

  /** r's record, made or moved to the back: what the kernel is given again stays longest. */
  function viewOf(r: Inode): Told {
    let t = told.get(r.ino);
    if (t) told.delete(r.ino);
    else {
      roomForInode();
      t = { gen: r.gen, version: r.version, perms: permsOf(r), names: new Map() };
    }
    told.set(r.ino, t);
    return t;
  }

  /** r as the kernel is told of it from now on. */
  function telling(r: Inode): Told {
    const t = viewOf(r);
    t.version = r.version;
    t.mixed = undefined;
    o.toldVersion?.(r.ino, r.version);
    t.gen = r.gen;
    t.perms = permsOf(r);
    return t;
  }

  function attr(r: Inode): Attr {
    const t = telling(r);
    const a = attrOf(r);
    const open = o.open.inode(r.ino);
    if (open) {
      for (const h of open.handles.keys()) {
        if (!h.writable || h.fd < 0) continue;
        const st = fs.fstatSync(h.fd, { bigint: true });
        a.size = Number(st.size);
        if (st.mtimeNs > a.mtime + 1_000_000n) a.mtime = st.mtimeNs;
        // An ftruncate or write through the handle changed the file after the record was written. A
        // change this node made (dirty) is stamped as its commit will publish it: the disk's coarse
        // clock may read before the record's time.
        if (h.dirty) a.ctime = changeTime(st.ctimeNs, a.ctime);
        else if (st.ctimeNs > a.ctime + 1_000_000n) a.ctime = st.ctimeNs;
        return a;
      }
      // Read here at an older version while a newer one was published: the kernel's size stays that
      // of the bytes the last open reads, or a read under way would end at the new size, cut short.
      let last: Handle["reads"];
      // A superseded one reads the version opened since at its next read.
      for (const h of open.handles.keys()) if (!h.superseded) last = h.reads ?? last;
      if (last && last.version !== r.version) {
        a.size = last.size;
        t.version = last.version;
        o.toldVersion?.(r.ino, last.version);
        // The current size goes to the kernel at the last close.
        heldBack.add(r.ino);
      }
    }
    return a;
  }

  /** parent/name leads the kernel to r from now on; r itself noted by note. */
  function named<T>(parent: number, name: string, r: Inode, note: (r: Inode) => T): T {
    const key = `${parent}/${name}`;
    const had = told.get(r.ino);
    if (had && had.gen !== r.gen) {
      // The number is another file's now: the names the kernel knew the old one by must lead nowhere stale.
      for (const old of had.names.keys()) if (old !== key) o.dropKernelEntry?.(...splitKey(old));
      had.names.clear();
      had.raced = undefined;
    }
    const a = note(r);
    const t = told.get(r.ino)!;
    t.names.set(key, ++toldSeq);
    t.raced?.delete(key);
    if (!toldNames.delete(key)) roomForName();
    toldNames.set(key, r.ino);
    return a;
  }

  return {
    told(parent, name, r) {
      // The shim gives these to the kernel later, or never: the kernel may still hold what it was
      // given before. Another version than that: it may hold either (mixed) until it is given one.
      const had = told.get(r.ino);
      const mixed = had !== undefined && had.gen === r.gen && (had.mixed === true || had.version !== r.version);
      const a = named(parent, name, r, attr);
      if (mixed) told.get(r.ino)!.mixed = true;
      return a;
    },
    answering(parent, name, r) {
      o.answering?.(r.ino);
      return named(parent, name, r, attr);
    },
    toldByShim: (parent, name, r) => void named(parent, name, r, telling),
    attr,
    given(r) {
      const t = told.get(r.ino);
      if (t && t.gen !== r.gen) return undefined;
      o.toldVersion?.(r.ino, r.version);
      if (!t) {
        roomForInode();
        told.set(r.ino, { gen: r.gen, version: UNKNOWN_VERSION, perms: "", names: new Map() });
      }
      return attrOf(r);
    },
    async sameName(r) {
      const t = told.get(r.ino);
      const now = `${r.parent}/${r.name}`;
      if (!t || r.nlink !== 1) return r;
      const names = t.names;
      /** The mark of a change heard since k was given (seq) that took it. */
      const takenSince = (k: string, seq: number) => {
        const m = t.raced?.get(k);
        return m !== undefined && m.seq > seq ? m : undefined;
      };
      const raced = (m: RaceMark | undefined) => m !== undefined && (m.settled || performance.now() <= m.until);
      const staleNames = () => [...names].filter(([k, seq]) => k !== now && !raced(takenSince(k, seq)));
      /** Not given a name since its last refusal: an open may only have walked a name dropped then. */
      const unnamed = () => t.refused !== undefined && ![...names.values()].some((seq) => seq > t.refused!);
      let stale = staleNames();
      if (!stale.length && !unnamed()) return r;
      // r read from the store after the change's commit, ahead of its message: heard, it may show the names raced it.
      if (stale.some(([k, seq]) => !takenSince(k, seq))) {
        await hearChange(r.ino, HEAR_WAIT_MS);
        stale = staleNames();
        if (!stale.length && !unnamed()) return r;
      }
      t.refused = ++toldSeq;
      o.refused?.(r.ino);
      // Forgotten here only once the kernel has dropped them, and unless given again meanwhile (a
      // reply that may land after the drop).
      const dropping = [...names];
      if (dropping.length && (await o.forgetNames?.(dropping.map(([k]) => splitKey(k))))) for (const [k, seq] of dropping) if (names.get(k) === seq) names.delete(k);
      throw new FsError(E.ESTALE, stale[0] ? `inode ${r.ino} is no longer named ${splitKey(stale[0][0])[1]}` : `inode ${r.ino} was refused by a name it no longer has, and not looked up since`);
    },
    racing(names, changed, until) {
      const marks: RaceMarks = [];
      for (const [parent, name] of names) {
        const key = `${parent}/${name}`;
        const ino = toldNames.get(key);
        const t = ino === undefined ? undefined : told.get(ino);
        if (!t?.names.has(key) || !changed.has(ino!)) continue;
        const m: RaceMark = { seq: ++toldSeq, until: until ?? -Infinity, settled: false };
        (t.raced ??= new Map()).set(key, m);
        marks.push([ino!, key, m]);
      }
      return marks;
    },
    settled(marks) {
      // A mark since replaced or taken back is no longer in the view: its flag changes nothing.
      for (const [, , m] of marks) if (m.until > -Infinity) m.settled = true;
    },
    heard(inos) {
      for (const ino of inos) for (const done of hearing.get(ino) ?? []) done();
    },
    late(marks) {
      for (const [ino, key, m] of marks) {
        const raced = told.get(ino)?.raced;
        if (raced?.get(key) === m) raced.delete(key);
      }
    },
    moved(ino, from, parent, name) {
      // The kernel moved its entry itself: the new name is one it holds, to be dropped when another
      // node renames or removes it, like a name it was given.
      const was = `${from.parent}/${from.name}`, key = `${parent}/${name}`;
      if (toldNames.get(was) === ino) toldNames.delete(was);
      if (!toldNames.delete(key)) roomForName();
      toldNames.set(key, ino);
      const names = told.get(ino)?.names;
      if (!names) return;
      names.delete(was);
      names.set(key, ++toldSeq);
      told.get(ino)!.raced?.delete(was);
    },
    unnamed(ino, parent, name) {
      const t = told.get(ino);
      t?.names.delete(`${parent}/${name}`);
      t?.raced?.delete(`${parent}/${name}`);
    },
    sameFile(r) {
      const t = told.get(r.ino);
      if (t === undefined || t.gen === r.gen) return r;
      // The names the kernel knew the old file by lead to another one now.
      dropNamesOf(r.ino, t);
      told.delete(r.ino);
      o.refused?.(r.ino);
      throw new FsError(E.ESTALE, `inode ${r.ino} is another file now`);
    },
    mayBeStale(ino, version) {
      const t = told.get(ino);
      if (t?.mixed) return true;
      const was = t?.version;
      const lastOpened = openedVersion.get(ino);
      // A reply computed before this open may carry another version's size: also after a version
      // change, unless a writer here made it from the version last opened.
      const w = wrote.get(ino);
      const ownChange = w !== undefined && w[1] === version && lastOpened === w[0];
      return was !== undefined && (was !== version || (lastOpened !== undefined && lastOpened !== version && !ownChange));
    },
    wroteHere(ino, from, to) {
      const t = told.get(ino);
      if (!t || t.mixed || t.version !== from) return;
      t.version = to;
      o.toldVersion?.(ino, to);
      if (wrote.size >= max) wrote.clear();
      wrote.set(ino, [from, to]);
    },
    refreshed(ino, version) {
      const t = told.get(ino);
      if (t) {
        t.version = version;
        t.mixed = undefined;
      }
      o.toldVersion?.(ino, version);
    },
    changedElsewhere,
    closed(ino) {
      if (!heldBack.delete(ino)) return false;
      // What the kernel holds now is not known (a reply of the last getattr may have been dropped): refreshed at the next open.
      const t = told.get(ino);
      if (t) t.version = UNKNOWN_VERSION;
      o.toldVersion?.(ino, UNKNOWN_VERSION);
      return true;
    },
    permsChanged: (r) => told.get(r.ino)?.perms !== permsOf(r),
    mayHaveEntry: (parent, name) => toldNames.has(`${parent}/${name}`),
    takeAll() {
      const names = [...toldNames.keys()].map(splitKey);
      toldNames.clear();
      return { names, inodes: [...new Set([1, ...told.keys()])].filter(changedElsewhere) };
    },
    opened(ino, version) {
      const keep = openedVersion.get(ino) === version;
      // Cleared: the next open of each drops its pages once more.
      if (openedVersion.size >= max) openedVersion.clear();
      openedVersion.set(ino, version);
      return keep;
    },
    versionOf: (ino) => told.get(ino)?.version,
    reread(ino, version) {
      if (openedVersion.has(ino) && openedVersion.get(ino) !== version) openedVersion.set(ino, UNKNOWN_VERSION);
    },
  };
}
