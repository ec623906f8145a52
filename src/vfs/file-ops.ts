import * as fs from "node:fs";
import { promisify } from "node:util";
import { dirname } from "node:path";
import { readOnlyFd } from "../cache/memfd.ts";
import type { Caller, FileSystem, OpenReply, SeenFile } from "../fuse/types.ts";
import { filePool } from "../local/file-pool.ts";
import { holdsBytesOf } from "../local/local-dir.ts";
import type { Holders, Inode } from "../meta/store.ts";
import { E, FsError, OutcomeUnknown, errnoOf, fsError } from "../util/errno.ts";
import { createInFlight } from "../util/in-flight.ts";
import { createTurnstile } from "../util/turnstile.ts";
import { isDir, isReg } from "./attr.ts";
import type { VfsContext } from "./context.ts";
import { checkName, checkReserved, checkRoom } from "./namespace-ops.ts";
import { compareNames } from "./name-order.ts";
import type { Handle, WriterOpening } from "./open-files.ts";
import { createOwnWatches } from "./own-watches.ts";
import type { ShimKits } from "./shim-kits.ts";
import { ChangingCopy, type RangeReader, type Sibling } from "./remote-data.ts";
import { mayKeepPrivileges, outsideGroup, withoutPrivileges } from "./privileges.ts";
import { CHANGING_WAIT_MS, KEPT_ASIDE_MAX, OVERWRITE_SERVED_AFTER_MS } from "./remote/changing-wait.ts";

const fsync = promisify(fs.fsync), fdatasync = promisify(fs.fdatasync);
const O_ACCMODE = 3;
const { O_APPEND, O_SYNC, O_DSYNC, O_RDWR, O_WRONLY, O_RDONLY, O_TRUNC, O_EXCL, O_DIRECT } = fs.constants;
const KEEP_OPEN_FLAGS = O_ACCMODE | O_APPEND | O_SYNC | O_DSYNC;
/** Longest pause between its tries meanwhile (they start at 10 ms and double). */
const CHANGING_POLL_MS = 200;
/**
 * How long an open of a file listed here that is not at its path keeps reading its record and path
 * again (renames of its directories landing on this disk meanwhile), before the copies elsewhere.
 */
const MOVED_WAIT_MS = 2_000;
/** How long a reader of another version open here is waited for to close before it is superseded. */
const SUPERSEDE_WAIT_MS = 200;
/** Times a reader's open reads the record again when a change of the file was heard while it waited (see open). */
const MONOTONIC_TRIES = 2;

type FileOps = Pick<FileSystem, "open" | "create" | "read" | "write" | "fallocating" | "flush" | "release" | "fsync" | "created" | "opened"> & {
  /**
   * A copy of ino at version, fetched ahead of any reader, arrived whole: granted to the shim at once
   * if this node watches the file at that version, so that the first open of it here needs no JS.
   */
  copyLanded(ino: number, version: number): void;
};

/** What open() learned of an inode: its record, its holders, and whether this node holds its bytes. */
interface Found {
  r: Inode;
  holders?: Holders;
  here: boolean;
}

type Listen = Parameters<RangeReader["follow"]>[0];

/** The bytes an open reads: an fd (this node's file, or a copy), or ranges of a big remote file; got: from elsewhere. */
interface Opened {
  found: Found;
  got: { fd: number } | { ranges: RangeReader } | undefined;
  fd: number;
  ranges: RangeReader | undefined;
}

/**
 * Opening, reading, writing and closing files: local bytes through their fd (served in the shim when
 * it can), other nodes' bytes from the cache or their holders, writers taking turns across nodes, and
 * close-to-open publishing.
 */
export function createFileOps(ctx: VfsContext, kits?: ShimKits): FileOps {
  const { store, root, nodeId, paths, cache, kernel, o } = ctx;
  const remote = o.remote;
  const grants = ctx.grants;
  const own = createOwnWatches({ store, watches: cache.watches, writtenHere: ctx.writtenHere, entries: (dir) => cache.entries(dir) });
  /** Handles the shim opened from a fresh grant (see OpenGrants.fresh): the grant's id. Their release settles it. */
  const freshOpens = new Map<number, number>();
  /** h's share of its node's turn to write the file, given back once (at its app's close, or its release). */
  function giveTurn(h: Handle): void {
    if (!h.turn) return;
    h.turn = false;
    ctx.turns.give(h.ino);
  }

  /** Writers' opens of a file on a cluster node, one at a time until each has its handle. */
  const writersOpening = createTurnstile<number>();
  /** Drops of the kernel's attributes under way for opens, by "ino.version". */
  const refreshing = createInFlight<string>();

  /**
   * The kernel's attributes of ino dropped, so that it asks for those of version. Opens of one
   * version at once share one drop: each drop discards the answers (a getattr's, a short read's
   * size) the kernel has on their way, and left it the last version's size over the new version's
   * bytes (readers read all zeros, or one version cut at another's size).
   */
  function refreshKernelTo(ino: number, version: number): Promise<void> {
    return refreshing.run(`${ino}.${version}`, async () => {
      await o.refreshKernelAttrs?.(ino);
      kernel.refreshed(ino, version);
    });
  }

  /**
   * Let the shim answer the next read-only opens of r's inode with fd (h's), while nothing changes
   * it: only while this node watches the file at this very version (every change elsewhere waits
   * for this node, which revokes the grant when it hears it, see the watches' drop in vfs.ts), reads
   * whole bytes from one fd, and no writer of it is open here (a writer's open revokes it).
   */
  function grant(h: Handle, r: Inode, asked: number): void {
    if (!grants || h.fd < 0 || h.ranges || h.superseded || h.cutFrom !== undefined || !h.reads || asked & O_DIRECT || r.nlink === 0) return;
    if (ctx.open.hasWriter(r.ino) || !store.watchesHold() || cache.watches.get(r.ino)?.r.version !== r.version || grants.versionOf(r.ino) === r.version) return;
    grants.grant(r, h.fd, h.reads.size, h.reads.copy, false);
  }

  /**
   * Close-to-open: with other nodes about, open() reads the record and its holders fresh. watch: and
   * this node watches the file from then on (a reader's open), so that the next ones need not.
   */
  async function fresh(ino: number, watch = false): Promise<Found> {
    const asked = watch ? cache.watches.asking(ino) : undefined;
    let got: Awaited<ReturnType<typeof store.recordAndHolders>> | undefined;
    try {
      got = await store.recordAndHolders(ino, watch);
    } finally {
      // Kept before it is learned: learning it must not count as a change of what is kept.
      if (asked) cache.watches.keep(asked, got?.unwatched ? undefined : got);
    }
    if (watch && ctx.writtenHere.has(ino)) own.opened(got.r.parent, ino);
    return found(ctx.learn(got.r), got.holders);
  }
  const found = (r: Inode, h: Holders): Found => ({ r, holders: h, here: h.data.get(nodeId) === r.version || (h.data.size === 0 && r.size === 0) });

  /**
   * A reader's open: what this node read of the file when it began to watch it, while no change of it
   * was heard and the store says that would have been (close-to-open all the same: a writer elsewhere
   * returns only once this node has heard its change, or has been unable to hear anything for longer
   * than it would trust this).
   */
  function known(ino: number): Promise<Found> | Found {
    const w = store.watchesHold() ? cache.watches.get(ino) : undefined;
    if (!w) return fresh(ino, true);
    o.watchedOpen?.();
    // Learned again: its attributes answer the kernel's getattrs after the open, as a fresh read's would.
    return found(ctx.learn(w.r), w.holders);
  }

  /** Each directory's files in natural order of their names (the order read-ahead expects them read in), and where each is in it, while its listing has not changed. */
  const indexes = new Map<number, { listing: ReadonlyMap<string, number>; changes: number; files: Sibling[]; at: Map<number, number> }>();
  /** The files of dir after ino in natural order, as far as its listing is loaded (none otherwise: no Redis call for this). */
  async function filesAfter(dir: number, ino: number): Promise<Iterable<Sibling>> {
    const l = cache.entries(dir);
    if (!l) return [];
    let x = indexes.get(dir);
    if (!x || x.listing !== l || x.changes !== cache.listingChanges(dir)) {
      const base = await paths.pathOf(dir);
      const prefix = base === "/" ? "/" : `${base}/`;
      const files: Sibling[] = [];
      const names = [...l].filter(([, i]) => i > 0).sort(([a], [b]) => compareNames(a, b));
      for (const [name, i] of names) files.push({ ino: i, path: prefix + name });
      if (indexes.size >= 1000) indexes.clear();
      x = { listing: l, changes: cache.listingChanges(dir), files, at: new Map(files.map((f, k) => [f.ino, k])) };
      indexes.set(dir, x);
    }
    const from = x.at.get(ino);
    // Not those this node wrote: a copy another node has of them would come back here for nothing.
    return from === undefined ? [] : x.files.slice(from + 1).filter((f) => !ctx.writtenHere.has(f.ino));
  }

  /**
   * Another node's bytes: a copy of this version in the cache, or ranges from a holder; for a writer,
   * a copy taken into this node's root (it becomes the holder). While the holder is writing a new
   * version the old one may be gone and the new one not whole yet: wait (bounded) for the write's
   * close and read what it published, rather than fail.
   */
  async function fromElsewhere(ino: number, f: Found, path: string, flags: number, writable: boolean): Promise<{ found: Found; got?: { fd: number } | { ranges: RangeReader } }> {
    const deadline = Date.now() + CHANGING_WAIT_MS;
    let pause = 10;
    /** The version its holder refuses to copy as changing, and since when. */
    let refused: { version: number; since: number } | undefined;
    /** A writer's copy is taken as its holder's writer has it now (see below). */
    let asWritten = false;
    for (;;) {
      if (f.here) return { found: f };
      const { r } = f;
      const change = ctx.changes.next(ino);
      try {
        if (!writable) return { found: f, got: await remote!.open(ino, r.version, path, r.size, f.holders, { dir: r.parent, after: (i) => filesAfter(r.parent, i) }) };
        // An empty version has no bytes to copy: none are asked of a holder that may be writing the next one.
        await ctx.takeHere(r, path, (flags & O_TRUNC) !== 0 || r.size === 0, f.holders, asWritten);
        if (r.nlink > 1) await ctx.linkAllNames(ino, path);
        return { found: f };
      } catch (e) {
        if (asWritten || !(e instanceof FsError && e.errno === E.EIO) || Date.now() >= deadline) throw e;
        const was = r.version;
        f = await fresh(ino);
        if (f.r.version !== was) continue;
        if (!(e instanceof ChangingCopy)) throw e;
        if (refused?.version !== was) refused = { version: was, since: Date.now() };
        // Not kept aside by its holder (too big, or no room there: a copy aside is made at once), whose
        // writer may keep it open past this wait: a reader reads it in ranges, which the holder serves
        // as written after a while; and if the writer closes first, moves to its version. One kept
        // aside is waited for and copied whole: a reader in ranges whose version goes reads the next
        // one on, mixing the two.
        if (f.r.size > KEPT_ASIDE_MAX || Date.now() - refused.since >= OVERWRITE_SERVED_AFTER_MS) {
          if (!writable) return { found: f, got: { ranges: await remote!.ranged(ino, f.r.version, path, f.r.size, f.holders) } };
          // A writer, its turn's wait over (see WriteTurns): works on the file as written there, what
          // a reader there would read, rather than fail; the last close wins.
          asWritten = true;
          continue;
        }
        // Polled too: the holder refuses reads until its writer's handle is released, which
        // publishes nothing when the close already did.
        await change.wait(Math.min(pause, deadline - Date.now()));
        pause = Math.min(pause * 2, CHANGING_POLL_MS);
        f = await fresh(ino);
      } finally {
        change.cancel();
      }
    }
  }

  /**
   * About to be written in place, while the record still names the closed version: other nodes
   * opening it meanwhile read that version from a copy kept aside.
   */
  async function keepClosedVersion(r: Inode, path: string, opening?: WriterOpening): Promise<void> {
    const intact = ctx.open.steady(r.ino);
    let rfd: number | undefined;
    try {
      rfd = root.openFile(path, O_RDONLY);
    } catch {
      // Not at its path here yet (a rename to follow): the open catches up; nothing kept.
    }
    if (rfd === undefined) return;
    try {
      for (let kept = { version: r.version, size: r.size }; ; ) {
        await remote!.preserve(r.ino, kept.version, rfd, kept.size, intact);
        // Published again meanwhile (the close of a closed writer's duplicate in another process):
        // the store names that version now, which this writer's open is about to change too.
        const latest = opening?.latest;
        if (!latest || latest.version === kept.version || !intact()) break;
        kept = latest;
      }
    } finally {
      fs.closeSync(rfd);
    }
  }

  /**
   * This node's own file of ino at path, following another node's rename not applied here yet;
   * undefined when there is none there even then: no regular file, or another file's (by its
   * identity mark: a rename here moved it onto the name after ino's path was read, or another
   * node's rename is still on its way here). Opened first, looked at only when that fails: the
   * common case costs one openat2 and one fgetxattr.
   */
  async function openHere(ino: number, path: string, flags: number): Promise<number | undefined> {
    const open = () => root.openFile(path, flags & KEEP_OPEN_FLAGS);
    try {
      const fd = ownFile(await root.openFileAsync(path, flags & KEEP_OPEN_FLAGS), ino);
      if (fd !== undefined) return fd;
    } catch (e) {
      if (root.typeOf(path) === "file") throw e;
    }
    await o.catchUp?.();
    try {
      return ownFile(open(), ino);
    } catch (e) {
      if (root.typeOf(path) === "file") throw e;
      return undefined;
    }
  }

  /** fd, if it is a file of ino; else closed. */
  function ownFile(fd: number, ino: number): number | undefined {
    if (holdsBytesOf(root, fd, ino)) return fd;
    fs.closeSync(fd);
    return undefined;
  }

  /**
   * The file of ino this node has just made at path. ESTALE if it is not there now: another file is
   * (see openHere), or another node's rename or unlink, applied to this disk since, took it.
   */
  async function openLocal(ino: number, path: string, flags: number): Promise<number> {
    const fd = await openHere(ino, path, flags);
    if (fd === undefined) throw new FsError(E.ESTALE, `${path} holds no file of inode ${ino} now`);
    return fd;
  }

  const gone = (e: unknown) => e instanceof FsError && e.errno === E.ENOENT;

  /**
   * The kernel keeps one page cache per inode: no handle may bring other bytes into it than those
   * the newest open here reads, or that one reads them from the cache. So once a handle opens another
   * version (a copy of another node's file; or this node's own file, when the new handle reads a
   * copy), or a writer opens this node's file (which then changes in place, and a copy of it does
   * not), the handles reading a copy of anything else read what the newest open reads from then on
   * (reopen): the file changed since they opened it, as if in place.
   */
  function supersede(fresh: Handle, version: number): void {
    const writing = ctx.open.hasWriter(fresh.ino);
    for (const [h, fh] of ctx.open.inode(fresh.ino)?.handles ?? []) {
      if (!h.reads || h.superseded) continue;
      const other = h !== fresh && h.reads.version !== version && (h.reads.copy || !!fresh.reads?.copy);
      if (!other && !(h.reads.copy && writing)) continue;
      h.superseded = true;
      // Its fd stays open to its release: a read of it may be under way in the shim.
      o.detachHandle?.(fh);
    }
  }

  /**
   * h as its open read r, on a sole node: a close here may have published the file meanwhile (its
   * release publishes, and may reach JS after a later open of the file came). Every handle there has
   * the one local file, whose record now is the cache's (each change is learned here, in order).
   */
  function caughtUp(h: Handle, r: Inode): Inode {
    const now = ctx.cache.fresh(h.ino);
    if (!now || now.version === r.version) return r;
    const entry = ctx.open.inode(h.ino);
    if (entry) entry.rec = now;
    if (h.reads) h.reads = { version: now.version, size: now.size, copy: false };
    return now;
  }

  /**
   * Publish what was written through h. ENOENT: its last name went on another node meanwhile (an
   * unlink, a rename or create over it), and a close of an unlinked file succeeds, its bytes going
   * with it. Not so when its create never reached the store: that refusal is the close's error. And
   * when the create was still on its way, the update may have overtaken it (a script Redis had
   * lost, sent again after the one behind it): once the create is in, it is sent again. A create
   * whose connection was lost under it may or may not have been made: without a record and not
   * deleted, the file goes back from this disk, as one Redis lost.
   */
  async function publish(h: Handle, seen?: SeenFile): Promise<void> {
    const creating = ctx.policy.unsettled(h.ino);
    try {
      await ctx.commit(h, undefined, seen);
    } catch (e) {
      if (!gone(e)) throw e;
      const made = await ctx.policy.settled(h.ino).then(
        () => true,
        (err: unknown) => {
          if (err instanceof OutcomeUnknown && o.recordLost) return false;
          throw err;
        },
      );
      if (creating && made) await ctx.commit(h).catch((again: unknown) => {
        if (!gone(again)) throw again;
      });
      // Not unlinked elsewhere: Redis lost the record (a restore, its last second gone), and with it
      // the file, whose bytes are here. They go back now, whole, rather than at the next check.
      else if (o.recordLost && !(await store.deleted([h.ino]))[0]) await o.recordLost(h.ino);
    }
  }

  /**
   * The record of ino and the bytes it names, opened with flags: this node's own file, or another
   * node's (a copy, ranges).
   */
  async function dataOf(ino: number, flags: number, writable: boolean, opening?: WriterOpening): Promise<{ a: Opened; r: Inode }> {
    const moving = { until: 0, pause: 1 };
    const attempt = async (tries = 0): Promise<Opened> => {
      let f: Found;
      try {
        f = remote ? await (writable || tries > 0 ? fresh(ino) : known(ino)) : { r: await ctx.record(ino), here: true };
        kernel.sameFile(f.r);
        if (remote) await kernel.sameName(f.r);
        if (isDir(f.r.mode)) throw fsError("EISDIR");
      } catch (e) {
        // The name the kernel opened by led to a file gone since (unlinked, or replaced by another
        // node's create): ESTALE makes it look the name up again and open what is there now.
        throw remote ? ctx.gone(e, ino) : e;
      }
      // Unlinked while open here, and opened again (through /proc/PID/fd): the file has no path
      // left, and the one it had may name another file now; the fds open on it reach it. A writer
      // here of a file another node holds writes a file made from that node's bytes, not published
      // yet: a writer opening it too writes the same one, not another made at the path over it.
      const held = f.r.nlink === 0 ? ctx.open.localFd(ino) : writable && remote && !f.here ? ctx.open.writerFd(ino) : undefined;
      if (held !== undefined) return { found: f, got: undefined, fd: fs.openSync(`/proc/self/fd/${held}`, flags & KEEP_OPEN_FLAGS), ranges: undefined };
      // Its record gone since it was read (a rename over its name, here or elsewhere): ESTALE, as above.
      const path = await ctx.onInode(ino, () => paths.pathOf(ino, tries > 0));
      // A writer here writes this node's own file, not yet published: a reader here reads it too.
      if (!f.here && remote && !writable && ctx.open.hasWriter(ino)) f = { ...f, here: true };
      let here: number | undefined;
      if (f.here && remote) {
        here = await openHere(ino, path, flags);
        // Listed as holding it, yet not at its path: another node's rename, applied to this disk
        // since the record was read or before this node's caches heard of it, moved it (record and
        // path again, from the store); or Redis put back an older record after losing writes: the
        // copies elsewhere, rather than EIO.
        if (here === undefined && (tries === 0 || Date.now() < moving.until)) {
          if (tries === 0) moving.until = Date.now() + MOVED_WAIT_MS;
          else await Bun.sleep((moving.pause = Math.min(moving.pause * 2, 50)));
          return attempt(tries + 1);
        }
        if (here === undefined) f = { ...f, here: false };
      }
      // Its record gone while its bytes were sought (another node's rename over its name): ESTALE, as above.
      const { found, got } = await fromElsewhere(ino, f, path, flags, writable).catch((e: unknown) => {
        throw ctx.gone(e, ino);
      });
      let fd = -1;
      let ranges: RangeReader | undefined;
      if (got && "fd" in got) fd = got.fd;
      else if (got) ranges = got.ranges;
      else {
        try {
          if (found.here && writable && !(flags & O_TRUNC) && remote && found.r.size > 0 && !ctx.open.writing(ino)) await keepClosedVersion(found.r, path, opening);
        } catch (e) {
          if (here !== undefined) fs.closeSync(here);
          throw e;
        }
        fd = here ?? (await openLocal(ino, path, flags));
      }
      return { found, got, fd, ranges };
    };
    let steady = ctx.open.steady(ino);
    let a = await attempt();
    let r = a.found.r;
    // A writer here changes this node's file in place, or did while this reader waited: the reader
    // reads what the file holds, so it takes the record of what this node last published of it,
    // while the open inode's record is that one. Else (the writer's last handle gone with it, or
    // another record learned since): read again, or an older record would be this reader's.
    for (let tries = 0; !writable && a.found.here && !steady(); tries++) {
      const open = ctx.open.inode(ino);
      if (open && open.ownVersion === open.rec.version) {
        r = open.rec;
        break;
      }
      if (tries === 3) break;
      fs.closeSync(a.fd);
      steady = ctx.open.steady(ino);
      a = await attempt();
      r = a.found.r;
    }
    return { a, r };
  }

  /** The shim serves h's reads from what has arrived of the copy ranges reads, while h reads through them. */
  function followRanges(h: Handle, ranges: RangeReader, listen: Listen): void {
    ranges.follow((fd, bytes, whole) => {
      if (h.ranges !== ranges || h.superseded) return;
      // Read by the shim from now on, unseen here.
      if (bytes > 0) h.rangesRead = true;
      listen(fd, bytes, whole);
    });
  }

  /**
   * What a superseded reader reads from now on: the version whose size the kernel was last given
   * (the newest open's, as a rule), from its own descriptor if it reads that one, else from another
   * handle's reading it (a description of its own); none such, or a writer open here (whose file every
   * reader here reads), the current version. Another version would answer reads at a size the kernel
   * does not hold: a short answer below that size is filled out with zeros into the one page cache
   * every reader here reads through.
   */
  async function readsNow(h: Handle): Promise<{ fd: number; ranges?: RangeReader; reads: NonNullable<Handle["reads"]> } | "same"> {
    const told = ctx.open.hasWriter(h.ino) ? undefined : kernel.versionOf(h.ino);
    const whole = (x: Handle) => told !== undefined && x.reads?.version === told && x.fd >= 0 && !x.ranges && x.cutFrom === undefined;
    if (whole(h)) return "same";
    for (const other of ctx.open.inode(h.ino)?.handles.keys() ?? []) {
      if (other === h || !whole(other)) continue;
      try {
        return { fd: readOnlyFd(other.fd), reads: { ...other.reads! } };
      } catch {
        // Closed under it meanwhile (its release): as with none.
      }
    }
    const { a, r } = await dataOf(h.ino, O_RDONLY, false).catch((e: unknown) => {
      throw new FsError(E.EIO, `inode ${h.ino} changed since this handle opened it, and the new version cannot be read: ${(e as Error).message}`);
    });
    return { fd: a.fd, ...(a.ranges ? { ranges: a.ranges } : {}), reads: { version: r.version, size: r.size, copy: a.got !== undefined } };
  }

  /**
   * A reader superseded here reads the version opened since, from its next read that reaches JS on:
   * as a reader of a local file sees a rewrite in place, rather than fail. What it read from is kept
   * to its release: a read of it may still be under way in the shim.
   */
  function reopen(h: Handle, fh: number): Promise<void> {
    h.reopening ??= (async () => {
      try {
        const now = await readsNow(h);
        // Released meanwhile (at shutdown: the kernel releases a handle only once its reads are done).
        if (ctx.open.find(fh) !== h) {
          if (now !== "same") {
            if (now.fd >= 0) fs.closeSync(now.fd);
            now.ranges?.close();
          }
          return;
        }
        if (now !== "same") {
          (h.retired ??= []).push({ fd: h.fd, ...(h.ranges ? { ranges: h.ranges } : {}) });
          h.fd = now.fd;
          if (now.ranges) h.ranges = now.ranges;
          else delete h.ranges;
          const before = h.reads?.size;
          h.reads = now.reads;
          if (before !== undefined && now.reads.size < before) h.cutFrom = Math.max(h.cutFrom ?? 0, before);
          delete h.cutTold;
        }
        const version = h.reads!.version;
        h.superseded = false;
        kernel.reread(h.ino, version);
        supersede(h, version);
        // Cut shorter: every read goes through JS, which refuses those past the new end (cutFrom).
        if (h.cutFrom !== undefined) return;
        if (h.fd >= 0) o.followHandle?.(fh, h.fd, 0, true);
        else if (h.ranges) followRanges(h, h.ranges, (at, bytes, whole) => o.followHandle?.(fh, at, bytes, whole));
      } finally {
        h.reopening = undefined;
      }
    })();
    return h.reopening;
  }

  /**
   * A read from the end of the shorter version h moved to on (see Handle.cutFrom). The kernel takes
   * a short answer as the file's end, at the read's start plus what it got, but only if no other
   * size reached it while the read was out. Answered empty before the kernel was told the end, a
   * readahead past it would leave the kernel that later start as the size, and the zeros it fills
   * the rest of the read across the end with would be read as the file's bytes: EIO then (an error
   * tells the kernel no size). From the end itself, or once a read across it was answered: empty.
   */
  function pastCut(h: Handle, offset: number): Buffer | undefined {
    if (h.cutFrom === undefined || !h.reads || offset < h.reads.size) return undefined;
    if (offset === h.reads.size || h.cutTold) {
      h.cutTold = true;
      return Buffer.alloc(0);
    }
    throw new FsError(E.EIO, `inode ${h.ino} was cut to ${h.reads.size} bytes elsewhere while read here (its kernel was given ${h.cutFrom}), and the kernel was not told that end yet: a read past it`);
  }

  /** A read of h at offset of size was answered: across the end of the version it moved to, it told the kernel that end. */
  function answered<T>(h: Handle, offset: number, size: number, out: T): T {
    if (h.cutFrom !== undefined && h.reads && offset < h.reads.size && offset + size > h.reads.size) h.cutTold = true;
    return out;
  }

  /** Take ino's privileges from c's change (withoutPrivileges), in the store first, then from its local file through fd; the record as it is then. */
  async function dropPrivileges(c: Caller, ino: number, fd: number, r: Inode): Promise<Inode> {
    const kept = withoutPrivileges(r.mode, () => outsideGroup(c, r.gid));
    if (kept === undefined) return r;
    const now = ctx.learnChange(await ctx.store.setAttrs(ino, { mode: kept }));
    fs.fchmodSync(fd, kept & 0o7777);
    // Not awaited: a write's caller holds the kernel's inode until this answers. The shim's copy of the attributes goes at once.
    void o.refreshKernelAttrs?.(ino);
    return now;
  }

  const ops: FileOps = {
    async open(_c, ino, asked) {
      // O_TRUNC cuts the file whatever the access mode (Linux; the kernel checked write permission
      // for it): a read-only open with it writes, once.
      const flags = (asked & O_ACCMODE) === O_RDONLY && asked & O_TRUNC ? (asked & ~O_ACCMODE) | O_RDWR : asked;
      const acc = flags & O_ACCMODE;
      const writable = acc === O_WRONLY || acc === O_RDWR;
      // Readers here read what a writer here writes from now on: not a grant's bytes.
      if (writable) grants?.revoke(ino);
      // Before the record is read: the bytes to write over are those of the last writer's close.
      const leased = writable && !!remote && (await ctx.turns.take(ino));
      // Until its handle is added, where another writer's open here looks for it (dataOf).
      const admitted = writable && remote ? await writersOpening.enter(ino) : undefined;
      const opening = writable ? ctx.open.writerOpens(ino) : undefined;
      // A change heard before this handle makes the inode open here updates no open file's record.
      let heard = ctx.changes.watch(ino);
      const read = () =>
        dataOf(ino, flags, writable, opening).catch((e: unknown) => {
          opening?.done();
          heard.cancel();
          // Whichever step failed: its share of the turn goes back (another node's writer may wait for it).
          if (leased) ctx.turns.give(ino);
          admitted?.();
          throw e;
        });
      let data = await read();
      // Another version is read here (see supersede): the older reader must move to this one, as the
      // kernel has one page cache per inode. Readers mostly read and close at once: the older one is
      // given a moment to, rather than see the file change under it.
      for (let tries = 0; !writable; tries++) {
        // Handles of the opens the shim answered from a grant revoked since are taken in first: they
        // are waited for and superseded with the others, before the kernel has this version.
        if (grants) o.takeShimNotes?.();
        const copy = data.a.got !== undefined, version = data.r.version;
        await ctx.open.closedOf(ino, (o) => !!o.reads && !o.superseded && o.reads.version !== version && (o.reads.copy || copy), SUPERSEDE_WAIT_MS);
        // A newer version heard meanwhile (other opens here may have handed the kernel its size since):
        // read again, or this open would move the kernel's size and page cache back to an older one.
        if (!heard.changed() || tries === MONOTONIC_TRIES) break;
        if (data.a.fd >= 0) fs.closeSync(data.a.fd);
        data.a.ranges?.close();
        heard.cancel();
        heard = ctx.changes.watch(ino);
        data = await read();
      }
      const a = data.a;
      let r = data.r;
      const { got, fd, ranges } = a;
      const h: Handle = { ino, fd, writable, dirty: false, ...(ranges ? { ranges } : {}), ...(leased ? { turn: true } : {}), ...(writable ? {} : { reads: { version: r.version, size: r.size, copy: got !== undefined } }) };
      const overwrites = remote && writable && !(flags & O_TRUNC) && !ctx.open.writing(ino);
      const fh = ctx.open.add(h, r);
      admitted?.();
      opening?.done();
      // Again: a reader's open that was under way may have granted it meanwhile.
      if (writable) grants?.revoke(ino);
      if (!remote) r = caughtUp(h, r);
      heard.cancel();
      // Another node's change heard while the record was read: the handle's record (which its
      // getattrs answer with, and the kernel keeps) is read again, and the kernel's attributes dropped.
      if (heard.changed()) {
        await ctx.current(ino).catch(() => undefined);
        await o.refreshKernelAttrs?.(ino);
      }
      // Other nodes wait for this version while this writer keeps it open; if it keeps it long, they read it as written.
      if (overwrites) ctx.open.overwriting(ino, r);
      supersede(h, r.version);
      // Close-to-open: the kernel may still hold the size of another version (its attribute cache,
      // or a reply computed before this open), and would cut reads of these bytes short at it, or
      // fill them out with zeros. After the handle is added: the kernel view answers for it from now on.
      if (remote && kernel.mayBeStale(ino, r.version)) await refreshKernelTo(ino, r.version);
      // Also when the record says it is empty: another handle here may have written it since, and
      // an O_TRUNC open of an existing file changes its mtime and ctime even when it was empty.
      if (flags & O_TRUNC) {
        try {
          // As a truncate or write by the caller would: with atomic O_TRUNC the kernel leaves it to the filesystem.
          if (!mayKeepPrivileges(_c)) r = await dropPrivileges(_c, ino, fd, r);
          r = await ctx.commit(h, 0);
        } catch (e) {
          await ops.release(_c, ino, fh, false);
          // Unlinked on another node since its record was read: ESTALE makes the kernel look the
          // name up again, and open what is there now or make the file (O_CREAT), as a local open would.
          throw remote ? ctx.gone(e, ino) : e;
        }
      }
      // Pages cached by the kernel stay valid while the version is the one they were read at.
      const keepCache = kernel.opened(ino, r.version);
      if (!writable) grant(h, r, asked);
      const follow = (listen: Listen) => ranges && followRanges(h, ranges, listen);
      return {
        fh,
        // Read when the open is answered: a handle superseded before then (at once, or by an event
        // while the reply waits its turn) gets no fd for the shim to serve it from.
        get fd() {
          return fd >= 0 && !h.superseded ? fd : undefined;
        },
        ...(ranges ? { follow } : {}),
        keepCache,
        // A reader's close publishes nothing, and waits for nothing: each close of it would cost a trip.
        // Nor does a sole node's writer's whose bytes the shim serves: its release publishes (in order,
        // as the flush would have) and nobody else waits for them.
        noFlush: !writable || (!remote && fd >= 0),
        writes: writable,
        // This node's own file, read and written by the kernel itself. Not a reader's with other nodes
        // about, unless a writer is open here (then every reader here reads this file): the kernel
        // keeps one backing file per inode, and a reader opening another version after it could not.
        passthrough: fd >= 0 && got === undefined && !(asked & O_DIRECT) && (writable || !remote || ctx.open.hasWriter(ino)),
      } satisfies OpenReply;
    },

    async create(c, parent, name, mode, flags) {
      checkName(name);
      checkReserved(parent, name);
      checkRoom(ctx);
      // Read and write whatever the caller asked, as creates.c: a backing file for passthrough is O_RDWR.
      const localFlags = (flags & KEEP_OPEN_FLAGS & ~O_ACCMODE) | O_RDWR;
      const { r, fd, path } = await ctx.policy.createFile(ctx, c, parent, name, mode, localFlags, (flags & O_EXCL) !== 0);
      ctx.writtenHere.add(r.ino);
      // Where its file is: its close looks for it elsewhere only if the namespace moved it since.
      const fh = ctx.open.add({ ino: r.ino, fd, writable: true, dirty: false, at: path }, r);
      kernel.opened(r.ino, r.version);
      if (kits) kits.madeIn(await ctx.record(parent), dirname(path), name, fd);
      return { attr: kernel.answering(parent, name, r), open: { fh, fd, keepCache: false, unpublished: ctx.policy.unsettled(r.ino), passthrough: !(flags & O_DIRECT), noFlush: !remote && fd >= 0, writes: true } };
    },

    async created(c, parent, name, m) {
      const gen = kits?.take(m.ino, parent);
      if (gen === undefined || !ctx.policy.adopt) {
        // Never so (kits are only handed where files are adopted): its handle fails from now on.
        o.detachHandle?.(m.fh);
        fs.closeSync(m.fd);
        ctx.log.error({ op: "create", parent, name, ino: m.ino }, "the shim made a file with no kit handed for it");
        return;
      }
      const { r, path } = await ctx.policy.adopt(ctx, c, parent, name, { ino: m.ino, gen, mode: m.mode, gid: m.gid, time: m.time, fd: m.fd, flags: m.flags });
      ctx.writtenHere.add(r.ino);
      ctx.open.add({ ino: r.ino, fd: m.fd, writable: true, dirty: false, ...(path !== undefined ? { at: path } : {}) }, r, m.fh);
      kernel.opened(r.ino, r.version);
      kernel.toldByShim(parent, name, r);
    },

    copyLanded(ino, version) {
      if (!grants || !remote) return;
      const r = cache.watches.get(ino)?.r;
      if (!r || r.version !== version || !isReg(r.mode) || r.nlink === 0) return;
      // As a grant after an open (grant above), and the kernel told nothing of another version: its
      // lookup will carry this one's attributes (another's revokes the grant: vfs toldVersion). Its
      // pages are unknown here (the kernel view forgets which version it last opened): fresh.
      if (ctx.open.inode(ino) || !store.watchesHold() || grants.versionOf(ino) !== undefined || kernel.mayBeStale(ino, version)) return;
      const c = remote.peek(ino, version);
      if (!c) return;
      try {
        grants.grant(r, c.fd, r.size, true, true);
      } finally {
        fs.closeSync(c.fd);
      }
    },

    opened(_c, ino, m) {
      grants?.tookHandle();
      const r = ctx.open.inode(ino)?.rec ?? grants?.recordOf(ino, m.grant);
      if (!r) {
        // Never so (a grant's record outlives it): its handle fails from now on.
        o.detachHandle?.(m.fh);
        fs.closeSync(m.fd);
        ctx.log.error({ op: "open", ino, grant: m.grant }, "the shim answered an open from a grant whose record is gone");
        return;
      }
      const h: Handle = { ino, fd: m.fd, writable: false, dirty: false, reads: { version: m.version, size: m.size, copy: m.copy } };
      ctx.open.add(h, r, m.fh);
      // Its grant revoked since (a change came meanwhile): it opened before the change returned, and
      // reads its version as a reader that opened then through JS does; the open of the next version
      // here takes it in first, gives it a moment to close, then supersedes it (open above).
      if (grants?.stands(ino, m.grant)) supersede(h, m.version);
      kernel.opened(ino, m.version);
      // Read-ahead counts it as read, as an open through JS of a copy fetched ahead.
      if (m.copy) remote?.used(ino, m.version);
      if (grants?.fresh(ino, m.grant)) freshOpens.set(m.fh, m.grant);
    },

    async read(_c, ino, fh, offset, size) {
      const h = ctx.open.get(fh);
      while (h.superseded) await reopen(h, fh);
      const past = pastCut(h, offset);
      if (past) return past;
      if (h.ranges) {
        let from = h.ranges;
        let d: Awaited<ReturnType<RangeReader["read"]>>;
        try {
          d = await from.read(offset, size, !h.rangesRead);
        } catch (e) {
          if (errnoOf(e) !== E.EIO) throw e;
          // No holder has its version any more (one changed it in place, as a truncate does), or none
          // is up: once, it reads what the file is now (reopen fails too if none is up).
          h.superseded = true;
          o.detachHandle?.(fh);
          await reopen(h, fh);
          const past = pastCut(h, offset);
          if (past) return past;
          if (!h.ranges) return ops.read(_c, ino, fh, offset, size);
          from = h.ranges;
          d = await from.read(offset, size, !h.rangesRead);
        }
        // Moved to another version while it read (another read's reopen, an open here): its bytes
        // stop at the old one's end, and the kernel would take a short read for the file's end.
        if (h.ranges !== from || h.superseded) {
          if ("fd" in d) fs.closeSync(d.fd);
          return ops.read(_c, ino, fh, offset, size);
        }
        h.rangesRead = true;
        o.onIo?.("read", d.length);
        return answered(h, offset, size, d);
      }
      const buf = Buffer.allocUnsafe(size);
      const n = fs.readSync(h.fd, buf, 0, size, offset);
      o.onIo?.("read", n);
      return answered(h, offset, size, buf.subarray(0, n));
    },

    async fallocating(c, ino, fh) {
      if (!mayKeepPrivileges(c)) await dropPrivileges(c, ino, ctx.open.get(fh).fd, await ctx.record(ino));
    },

    async write(c, ino, fh, offset, data, killPrivileges) {
      const h = ctx.open.get(fh);
      if (ctx.o.roomFor?.(data.length) === false) throw fsError("ENOSPC");
      // The open file's record: another node's chmod reaches it before the shim sends writes here for it.
      if (killPrivileges) await dropPrivileges(c, ino, h.fd, await ctx.record(ino));
      const n = fs.writeSync(h.fd, data, 0, data.length, offset);
      h.dirty = true;
      h.closed = false;
      o.onIo?.("write", n);
      return n;
    },

    async flush(_c, ino, fh, dirty, seen) {
      const h = ctx.open.get(fh);
      if (dirty || h.dirty) await publish(h, seen);
      else await ctx.policy.settled(ino);
      // Its app closed it (a write through JS while the publish ran came through a duplicate of the descriptor).
      if (!h.dirty) h.closed = true;
      // Its share of the turn goes back at close: the kernel's release comes later, and by then this
      // node's next open may have run, keeping the turn from another node's writer for good.
      giveTurn(h);
    },

    async release(_c, ino, fh, dirty, seen) {
      const fresh = freshOpens.get(fh);
      if (fresh !== undefined) {
        freshOpens.delete(fh);
        // The kernel took in that open's drop of the pages before this close: every page it reads
        // from now on is of the grant's version.
        grants?.settle(ino, fresh);
      }
      const h = ctx.open.find(fh);
      if (!h) return;
      try {
        if ((dirty || h.dirty) && !ctx.purgeOnClose.has(ino)) await publish(h, seen);
        // A release with no flush before it (the kernel's open failed after the create) is the file's
        // close; the kernel takes no error from it, and the create's failure was logged. Only then:
        // a release that waits for nothing takes its handle away at once (peers refuse reads of a
        // file a writer has open here).
        else if (ctx.policy.unsettled(ino)) await ctx.policy.settled(ino).catch(() => {});
      } finally {
        // Closed at shutdown meanwhile (closeAll) if -1; else given up here, so that closeAll does not
        // close the number again. A file with no name left off this thread at once: its last close
        // frees its blocks, long for a big one; the others with the releases of this turn (a handoff
        // costs more than one close).
        if (h.fd >= 0) (ctx.purgeOnClose.has(ino) || ctx.open.inode(ino)?.rec.nlink === 0 ? filePool().close : filePool().closeSoon)(h.fd);
        h.fd = -1;
        h.ranges?.close();
        for (const old of h.retired ?? []) {
          if (old.fd >= 0) filePool().close(old.fd);
          old.ranges?.close();
        }
        const { last } = ctx.open.remove(fh, h);
        if (last && kernel.closed(ino)) o.dropKernelInode?.(ino);
        giveTurn(h);
        if (last && ctx.purgeOnClose.delete(ino)) await store.purge(ino);
      }
    },

    async fsync(_c, _ino, fh, datasync, dirty) {
      const h = ctx.open.get(fh);
      if (h.fd < 0) return;
      // On Bun's threads: a sync may wait on the disk for long, and every other request with it.
      await (datasync ? fdatasync : fsync)(h.fd);
      if (dirty || h.dirty) await publish(h);
      else await ctx.policy.settled(h.ino);
    },
  };
  return ops;
}
