import * as fs from "node:fs";
import type { Attr } from "../fuse/types.ts";
import type { Inode } from "../meta/store.ts";
import { E, FsError } from "../util/errno.ts";
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
  /** Attributes of r as the kernel must see them now (a writer's live size; a reader's version). */
  attr(r: Inode): Attr;
  /** r, unless its number is another file's than the one the kernel knows (ESTALE then). */
  sameFile(r: Inode): Inode;
  /**
   * r, unless the kernel was given it under a name it no longer has: those names are dropped from the
   * kernel, then ESTALE (the kernel looks up again the name it opened by). A name another node renamed
   * can outlive its invalidation in the kernel: a reply naming it (a listing, a lookup) that the
   * kernel takes in just after. Opened through such a name, a create (O_TRUNC) would empty the file
   * that moved away. The open does not say which name it came by, so every name the kernel was given
   * counts, not only the last: it may hold the new one and the old one at once. Files of several
   * names are let be.
   */
  sameName(r: Inode): Promise<Inode>;
  /** This node renamed ino from a name: the kernel moved its name itself. */
  moved(ino: number, from: { parent: number; name: string }, parent: number, name: string): void;
  /** This node removed a name of ino (unlink, or a rename over it): the kernel dropped it itself. */
  unnamed(ino: number, parent: number, name: string): void;
  /** Whether the kernel may hold attributes of another version than version (then refresh them). */
  mayBeStale(ino: number, version: number): boolean;
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
  /** Every name the kernel was given, and forget them (it is about to be told to drop them all). */
  takeNames(): [number, string][];
  /** An open at version: whether the kernel's cached pages of ino stay valid (same version as the last open). */
  opened(ino: number, version: number): boolean;
}

/** Stands for a version the kernel may hold attributes of, not known which: never any file's. */
const UNKNOWN_VERSION = -1;

const permsOf = (r: Inode) => `${r.mode}:${r.uid}:${r.gid}`;

const splitKey = (k: string): [number, string] => {
  const slash = k.indexOf("/");
  return [Number(k.slice(0, slash)), k.slice(slash + 1)];
};

/** Entries kept per map before it is cleared (the kernel then just gets refreshed once more). */
const KEPT_MAX = 200_000;

/**
 * dropKernelEntry: make the kernel forget a name. refused: a reply of ESTALE for ino is on its way (the
 * kernel looks the name up again: that lookup must come here, not be answered from elsewhere).
 */
export function createKernelView(o: {
  open: OpenFiles;
  dropKernelEntry?: (parent: number, name: string) => void;
  /** Make the kernel forget these names; resolves once it has (false: not in time). */
  forgetNames?: (names: [number, string][]) => Promise<boolean>;
  refused?: (ino: number) => void;
}): KernelView {
  /**
   * Identity of the file the kernel was told each inode number is. Another identity under the same
   * number (handed out again after Redis lost writes) means the kernel's inode is stale: ESTALE makes
   * it look the name up again instead of reading another file's bytes under it.
   */
  const kernelGen = new Map<number, string>();
  /**
   * The names ("parent/name") the kernel got each inode under (lookups, creates, readdirplus) and may
   * still hold, each with when it was last given (a count): a name given again while it was being
   * dropped from the kernel stays.
   */
  const kernelNames = new Map<number, Map<string, number>>();
  let toldSeq = 0;
  /** Data version of the attributes last given to the kernel, per inode (it caches them). */
  const kernelVersion = new Map<number, number>();
  /** Owner and mode last given to the kernel, per inode. */
  const kernelPerms = new Map<number, string>();
  /** Inodes open here that other nodes changed since they were opened (see changedElsewhere). */
  const heldBack = new Set<number>();
  /** Data version of each inode when this node last opened it (for the kernel's page cache). */
  const openedVersion = new Map<number, number>();
  /** Names given to the kernel, "parent/name". */
  const toldNames = new Set<string>();
  /** A map above was cleared: what the kernel holds is no longer known, so it may hold anything. */
  let lostInodes = false;
  let lostNames = false;

  function attr(r: Inode): Attr {
    if (kernelVersion.size >= KEPT_MAX) {
      kernelVersion.clear();
      lostInodes = true;
    }
    kernelVersion.set(r.ino, r.version);
    if (kernelGen.size >= KEPT_MAX) kernelGen.clear();
    kernelGen.set(r.ino, r.gen);
    const a = attrOf(r);
    const open = o.open.inode(r.ino);
    if (kernelPerms.size >= KEPT_MAX) kernelPerms.clear();
    kernelPerms.set(r.ino, permsOf(r));
    if (open) {
      for (const h of open.handles.keys()) {
        if (!h.writable) continue;
        const st = fs.fstatSync(h.fd, { bigint: true });
        a.size = Number(st.size);
        if (st.mtimeNs > a.mtime + 1_000_000n) a.mtime = st.mtimeNs;
        // An ftruncate or write through the handle changed the file after the record was written.
        if (st.ctimeNs > a.ctime + 1_000_000n) a.ctime = st.ctimeNs;
        return a;
      }
      // Read here at an older version while a newer one was published: the kernel's size stays that
      // of the bytes the last open reads, or a read under way would end at the new size, cut short.
      let last: Handle["reads"];
      for (const h of open.handles.keys()) last = h.reads ?? last;
      if (last && last.version !== r.version) {
        a.size = last.size;
        kernelVersion.set(r.ino, last.version);
      }
    }
    return a;
  }

  return {
    told(parent, name, r) {
      const key = `${parent}/${name}`;
      const gen = kernelGen.get(r.ino);
      if (gen !== undefined && gen !== r.gen) {
        // The number is another file's now: the names the kernel knew the old one by must lead nowhere stale.
        for (const old of kernelNames.get(r.ino)?.keys() ?? []) if (old !== key) o.dropKernelEntry?.(...splitKey(old));
        kernelNames.delete(r.ino);
      }
      if (kernelNames.size >= KEPT_MAX) kernelNames.clear();
      const names = kernelNames.get(r.ino);
      if (names) names.set(key, ++toldSeq);
      else kernelNames.set(r.ino, new Map([[key, ++toldSeq]]));
      if (toldNames.size >= KEPT_MAX) {
        toldNames.clear();
        lostNames = true;
      }
      toldNames.add(`${parent}/${name}`);
      return attr(r);
    },
    attr,
    async sameName(r) {
      const names = kernelNames.get(r.ino);
      const now = `${r.parent}/${r.name}`;
      if (!names || r.nlink !== 1) return r;
      const stale = [...names].filter(([k]) => k !== now);
      if (!stale.length) return r;
      o.refused?.(r.ino);
      // Forgotten here only once the kernel has dropped them, and unless given again meanwhile (a
      // reply that may land after the drop): until then every open of r is refused.
      if (await o.forgetNames?.(stale.map(([k]) => splitKey(k)))) for (const [k, seq] of stale) if (names.get(k) === seq) names.delete(k);
      throw new FsError(E.ESTALE, `inode ${r.ino} is no longer named ${splitKey(stale[0]![0])[1]}`);
    },
    moved(ino, from, parent, name) {
      const names = kernelNames.get(ino);
      if (!names) return;
      names.delete(`${from.parent}/${from.name}`);
      names.set(`${parent}/${name}`, ++toldSeq);
    },
    unnamed(ino, parent, name) {
      kernelNames.get(ino)?.delete(`${parent}/${name}`);
    },
    sameFile(r) {
      const gen = kernelGen.get(r.ino);
      if (gen === undefined || gen === r.gen) return r;
      kernelGen.delete(r.ino);
      o.refused?.(r.ino);
      throw new FsError(E.ESTALE, `inode ${r.ino} is another file now`);
    },
    mayBeStale(ino, version) {
      const told = kernelVersion.get(ino);
      const lastOpened = openedVersion.get(ino);
      // A reply computed before this open may carry another version's size: also after a version change.
      return told !== undefined && (told !== version || (lastOpened !== undefined && lastOpened !== version));
    },
    refreshed(ino, version) {
      kernelVersion.set(ino, version);
    },
    changedElsewhere(ino) {
      if (!(ino === 1 || lostInodes || kernelVersion.has(ino))) return false;
      if (!o.open.inode(ino)) return true;
      heldBack.add(ino);
      return false;
    },
    closed(ino) {
      if (!heldBack.delete(ino)) return false;
      // What the kernel holds now is not known (a reply of the last getattr may have been dropped): refreshed at the next open.
      kernelVersion.set(ino, UNKNOWN_VERSION);
      return true;
    },
    permsChanged: (r) => kernelPerms.get(r.ino) !== permsOf(r),
    mayHaveEntry: (parent, name) => lostNames || toldNames.has(`${parent}/${name}`),
    takeNames() {
      const out = [...toldNames].map(splitKey);
      toldNames.clear();
      return out;
    },
    opened(ino, version) {
      const keep = openedVersion.get(ino) === version;
      if (openedVersion.size >= KEPT_MAX) openedVersion.clear();
      openedVersion.set(ino, version);
      return keep;
    },
  };
}
