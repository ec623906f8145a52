import * as fs from "node:fs";
import type { ServiceImpl } from "@connectrpc/connect";
import { Peer, type ReadFilesRequest, type ReadRequest } from "../gen/mcfs/v1/peer_pb.ts";
import { fromConnectError, toConnectError } from "./errors.ts";
import { E, FsError, errnoOf, toErrno } from "../util/errno.ts";
import { readCopy, type CopyData } from "../cache/copy-cache.ts";
import { dataRun } from "../local/data-runs.ts";
import { holdsBytesOf, relOf, type LocalDir } from "../local/local-dir.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import type { RetiredFiles } from "./retired-files.ts";
import { FRAME_ROOM, type PieceOut } from "./file-frames.ts";

/** The version asked for is being rewritten here: the reader waits for the writer's close. */
const changing = (path: string) => new FsError(E.ESTALE, `${path} is being written on this node`);

/** Stream messages stay at or under 128 KiB: larger ones stall some gRPC clients on Bun's HTTP/2. */
export const CHUNK = 128 * 1024;
/** Files of a ReadFiles call opened before their turn. */
const OPEN_AHEAD = 8;

export interface PeerServiceOptions {
  /** This node's root path: the only place bytes are served from, besides the cache. */
  root: LocalDir;
  /** The cached copy of ino at version, if this node has one (a fd is closed after use). */
  openCached?: (ino: number, version: number) => CopyData | undefined;
  /** For each copy, whether this node is listed as holding that version in its root path. */
  holdsInRoot: (copies: { ino: number; version: number }[]) => Promise<boolean[]>;
  /** Follow other nodes' renames on the local disk (called once when an asked-for file is missing). */
  catchUp?: () => Promise<void>;
  /** Where the namespace has ino now: a reader may ask by a path renamed since it opened the file. */
  currentPath?: (ino: number) => Promise<string>;
  onServed?: (bytes: number) => void;
  /** Bytes of files unlinked while read in ranges elsewhere. */
  retired?: RetiredFiles;
  /** A check that no write of ino's root file began since the call, for a read of version (see Vfs.steady). */
  steady?: (ino: number, version: number, asWritten: boolean) => () => boolean;
  /** The size of version if its root file is served as its writer goes on (see Vfs.liveSize). */
  liveSize?: (ino: number, version: number, asWritten: boolean) => number | undefined;
}

/**
 * The service for Connect, and ReadFile and ReadFiles for the gRPC path that frames their replies
 * itself (file-frames.ts) and the bulk lane. Each message's bytes are its own: a transport may still
 * hold one it was handed when it asks for the next (HTTP/2 does, the bulk lane's socket too).
 */
export interface PeerService {
  impl: ServiceImpl<typeof Peer>;
  readFile(r: ReadRequest): AsyncGenerator<{ offset: bigint; data: Uint8Array }>;
  readFiles(r: ReadFilesRequest): AsyncGenerator<{ pieces: PieceOut[] }>;
  /**
   * The file ReadFile would read r's bytes from, with its checks, for a transport that sends them
   * from threads: undefined when its bytes are not those of a plain file (one served at a writer's
   * live size). Each range sent must be followed by intact() before it is let count: the bytes went
   * out before it was asked.
   */
  openFile(r: ReadRequest): Promise<OpenedFile | undefined>;
}

/** See PeerService.openFile. */
export interface OpenedFile {
  fd: number;
  /** Its size when opened: what a read to its end sends. */
  size: number;
  /** Whether no write here may have changed the bytes since it was opened. */
  intact(): boolean;
  /** n bytes of it were sent (for the metrics). */
  served(n: number): void;
  close(): void;
}

/**
 * Bytes to serve, and whether they are still those of the version asked for (a root file written here
 * is not). size: a file served as its writer goes on, whose length may differ from its version's by
 * now: served at that length, cut or filled with zeros (as what was cut reads once the file grows again).
 */
interface Source {
  data: CopyData;
  intact: () => boolean;
  size?: number;
}

/**
 * What a node serves other nodes: the bytes of files it holds, by inode and version, and nothing else.
 * A path is only where to look: it must be clean, outside mcfs's own state, and a regular file
 * reached without following any symlink; the inode's version must be held here (cache or root).
 */
export function createPeerService(o: PeerServiceOptions): PeerService {
  const guarded = <A extends unknown[], R>(fn: (...a: A) => R | Promise<R>) => async (...a: A): Promise<R> => {
    try {
      try {
        return await fn(...a);
      } catch (e) {
        if (errnoOf(e) !== E.ENOENT || !o.catchUp) throw e;
        await o.catchUp();
        return await fn(...a);
      }
    } catch (e) {
      throw toConnectError(e);
    }
  };

  function checkPath(path: string): void {
    if (!path.startsWith("/")) throw new FsError(E.EACCES, `path ${JSON.stringify(path)} is not an absolute namespace path`);
    try {
      relOf(path);
    } catch {
      throw new FsError(E.EACCES, `path ${JSON.stringify(path)} is not a clean path inside the root`);
    }
    if (path.split("/")[1] === RESERVED_NAME) throw new FsError(E.EACCES, "mcfs's own state is not served");
  }

  /** The bytes of ino at version: the cached copy, else the root path's file while listed as held here. */
  /** asWritten: a read of a range (Read), whose bytes go to the reader and nowhere else: see Vfs.steady. */
  async function openForRead(r: { path: string; ino: bigint; version: bigint }, held?: Promise<boolean>, asWritten = false): Promise<Source> {
    if (!r.ino) throw new FsError(E.EINVAL, "a read names the inode and version it wants");
    checkPath(r.path);
    const ino = Number(r.ino), version = Number(r.version);
    const c = o.openCached?.(ino, version);
    if (c) return { data: c, intact: () => true };
    const kept = o.retired?.open(ino, version);
    if (kept !== undefined) return { data: { fd: kept }, intact: () => true };
    // Taken before the holder check: a write begun after it may already have changed the bytes.
    const intact = o.steady?.(ino, version, asWritten) ?? (() => true);
    // Published here by writers still open: held here whatever the store says of newer versions since.
    const size = o.liveSize?.(ino, version, asWritten);
    if (size === undefined && !(await (held ?? o.holdsInRoot([{ ino, version }]).then((h) => h[0])))) {
      // Unlinked elsewhere a moment ago: its queued removal here keeps the bytes if they were read in
      // ranges. Not held here for any other reason (a sibling asked along): no need to catch up.
      if (o.retired?.wouldKeep(ino) && o.catchUp) {
        await o.catchUp();
        const kept = o.retired.open(ino, version);
        if (kept !== undefined) return { data: { fd: kept }, intact: () => true };
      }
      throw new FsError(E.ESTALE, `no copy of ${r.path} at version ${version} here`);
    }
    const fromRoot = (fd: number): Source => {
      if (intact()) return { data: { fd }, intact, ...(size !== undefined ? { size } : {}) };
      fs.closeSync(fd);
      throw changing(r.path);
    };
    const fd = await openInode(r.path, ino);
    if (fd !== undefined) return fromRoot(fd);
    // Renamed since the reader learned its path (or another file is there now): the file is the
    // inode, wherever the namespace has it.
    const now = o.currentPath ? await o.currentPath(ino) : r.path;
    if (now !== r.path) {
      checkPath(now);
      const moved = await openInode(now, ino);
      if (moved !== undefined) return fromRoot(moved);
    }
    // ENOENT: the caller catches up with queued renames once and asks again.
    throw new FsError(E.ENOENT, `no file of inode ${ino} at ${r.path} here`);
  }

  /** The file at path if it holds ino's bytes (by its identity mark; unmarked files are taken at their word); undefined if not there or another's. */
  async function openInode(path: string, ino: number): Promise<number | undefined> {
    let fd: number;
    try {
      fd = await o.root.openFileAsync(path, fs.constants.O_RDONLY);
    } catch (e) {
      if (errnoOf(e) === E.ENOENT) return undefined;
      throw e;
    }
    if (holdsBytesOf(o.root, fd, ino)) return fd;
    fs.closeSync(fd);
    return undefined;
  }
  const closeCopy = (s: Source) => {
    if ("fd" in s.data) fs.closeSync(s.data.fd);
  };
  /** Bytes of a source at an offset, refused if a write here may have changed them while they were read. */
  const readSource = (s: Source, into: Uint8Array, at: number, path: string): number => {
    const want = s.size === undefined ? into : into.subarray(0, Math.max(0, Math.min(into.length, s.size - at)));
    let n = readCopy(s.data, want, at);
    if (s.size !== undefined && n < want.length) {
      want.fill(0, n);
      n = want.length;
    }
    if (!s.intact()) throw changing(path);
    return n;
  };

  /** What a read of a file (or of a part of it) reads from. */
  async function sourceOf(r: ReadRequest): Promise<Source> {
    // A part of a big file (streams.ts): its later parts are asked for after its last name may have gone.
    if (r.length || r.offset) o.retired?.rangeRead(Number(r.ino));
    return guarded(() => openForRead(r))();
  }

  /** Bytes of a file from offset, in chunks of at most CHUNK, to its end or length. */
  async function* readFile(r: ReadRequest) {
    const c = await sourceOf(r);
    try {
      let off = Number(r.offset);
      const asked = r.length ? off + Number(r.length) : Infinity;
      // Asked to skip holes: read to the end of each run of data, the next one looked for from there.
      const end = r.holes ? Math.min(asked, c.size ?? fs.fstatSync(c.data.fd).size) : asked;
      let runEnd = r.holes ? off : end;
      for (;;) {
        if (r.holes && off >= runEnd) {
          let run: { start: number; end: number } | undefined;
          try {
            run = off < end ? dataRun(c.data.fd, off) : undefined;
            if ((!run || run.start >= end) && !c.intact()) throw changing(r.path);
          } catch (e) {
            throw toConnectError(e);
          }
          if (!run || run.start >= end) {
            yield { offset: BigInt(end), data: new Uint8Array(0) };
            return;
          }
          off = run.start;
          runEnd = Math.min(run.end, end);
        }
        const want = Math.min(CHUNK, (r.holes ? runEnd : end) - off);
        if (want <= 0) return;
        // Room in front of the bytes: the gRPC framing goes there without copying them (file-frames.ts).
        const buf = Buffer.allocUnsafe(FRAME_ROOM + want).subarray(FRAME_ROOM, FRAME_ROOM + want);
        let n: number;
        try {
          n = readSource(c, buf, off, r.path);
        } catch (e) {
          // Mid-stream: the errno must reach the reader (ESTALE: ask again), not "internal error".
          throw toConnectError(e);
        }
        if (n === 0) return;
        o.onServed?.(n);
        yield { offset: BigInt(off), data: buf.subarray(0, n) };
        off += n;
      }
    } finally {
      closeCopy(c);
    }
  }

  /** Consecutive files' bytes, several small ones to a message. */
  async function* readFiles(r: ReadFilesRequest) {
    // Every file's holder check at once (one round trip to Redis); opened a few ahead of the stream,
    // sent in order; a file that fails is reported and the rest still come.
    const all = o.holdsInRoot(r.files.map((f) => ({ ino: Number(f.ino), version: Number(f.version) })));
    all.catch(() => {});
    const held = r.files.map((_, i) => all.then((h) => h[i] === true));
    let pieces: PieceOut[] = [];
    // One buffer per message, filled by consecutive files.
    let buf = Buffer.allocUnsafe(CHUNK);
    let used = 0;
    // Each open waits on a pool thread: one at a time, a batch's stream waited for every one in turn.
    const opening: Promise<Source>[] = [];
    const openAhead = (upTo: number) => {
      for (let i = opening.length; i < Math.min(upTo, r.files.length); i++) {
        const open = guarded(() => openForRead(r.files[i]!, held[i]))();
        // Its failure is reported in its turn, not as a rejection nobody waited for meanwhile.
        open.catch(() => {});
        opening.push(open);
      }
    };
    let taken = 0;
    try {
      for (const [index, f] of r.files.entries()) {
        openAhead(index + OPEN_AHEAD);
        let c: Source;
        try {
          c = await opening[index]!;
        } catch (e) {
          pieces.push({ index, offset: 0n, data: new Uint8Array(0), errno: fromConnectError(e).errno, last: true });
          continue;
        } finally {
          taken = index + 1;
        }
        try {
          for (let off = 0; ; ) {
            if (used === CHUNK) {
              yield { pieces };
              pieces = [];
              buf = Buffer.allocUnsafe(CHUNK);
              used = 0;
            }
            const n = readSource(c, buf.subarray(used), off, f.path);
            const last = used + n < CHUNK;
            pieces.push({ index, offset: BigInt(off), data: buf.subarray(used, used + n), errno: 0, last });
            o.onServed?.(n);
            used += n;
            off += n;
            if (last) break;
          }
        } catch (e) {
          pieces.push({ index, offset: 0n, data: new Uint8Array(0), errno: toErrno(e), last: true });
        } finally {
          closeCopy(c);
        }
        // The first file is the one a reader waits for (the rest come along): sent at once, not once a
        // message's worth of the others is read behind it. The others go on filling the same buffer.
        if (index === 0 && pieces.length && r.files.length > 1) {
          yield { pieces };
          pieces = [];
        }
      }
      if (pieces.length) yield { pieces };
    } finally {
      // The reader went away mid-stream: what was opened ahead is closed once open.
      for (const open of opening.slice(taken)) open.then(closeCopy, () => {});
    }
  }

  const impl: ServiceImpl<typeof Peer> = {
    read: guarded(async (r) => {
      o.retired?.rangeRead(Number(r.ino));
      const c = await openForRead(r, undefined, true);
      try {
        const buf = Buffer.allocUnsafe(Math.min(Number(r.length) || CHUNK, 16 * CHUNK));
        const n = readSource(c, buf, Number(r.offset), r.path);
        o.onServed?.(n);
        return { data: buf.subarray(0, n) };
      } finally {
        closeCopy(c);
      }
    }),
    // Connect passes its handler context second: not for these generators.
    readFile: (r) => readFile(r),
    readFiles: (r) => readFiles(r),
  };
  async function openFile(r: ReadRequest): Promise<OpenedFile | undefined> {
    const c = await sourceOf(r);
    if (c.size !== undefined) {
      closeCopy(c);
      return undefined;
    }
    const fd = c.data.fd;
    let size: number;
    try {
      size = fs.fstatSync(fd).size;
    } catch (e) {
      closeCopy(c);
      throw e;
    }
    return { fd, size, intact: c.intact, served: (n) => o.onServed?.(n), close: () => fs.closeSync(fd) };
  }

  return { impl, readFile, readFiles, openFile };
}
