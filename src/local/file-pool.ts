import { JSCallback } from "bun:ffi";
import { closeSync } from "node:fs";
import { beneath } from "./beneath-native.ts";
import { cstr } from "../util/c-string.ts";

/** Results taken per poll (token, result, extra triples). */
const BATCH = 256;
/** Fewer closes than this in a turn are made on the JS thread: a handoff costs about two closes (a wake of a pool thread). */
const HANDOFF_MIN = 4;

/**
 * Threads for sends and for receives: streams under way at once, each with one job at a time (a
 * big file's parts come over four; a node serves several readers).
 */
const STREAMS = { send: 4, receive: 8 } as const;

/** What a frame received was (FilePool.receive), as native/beneath-pool.c numbers them. */
export const Got = { data: 0, end: 1, failure: 2, foreign: 3, writeError: 4, nothing: 5 } as const;

/** What a new file is given on the pool's thread: owner, mode (as opened) and an identity mark. */
export interface NewFileOwner {
  uid: number;
  gid: number;
  markName: string;
  mark: string;
}

/**
 * Calls on backing files beneath a root, run on the threads of native/beneath-pool.c so that one
 * waiting on a directory lock or the disk does not hold up the JS thread. Each resolves with what its
 * call in native/beneath.c returns (>= 0, or -errno); rootFd must stay open until then.
 */
export interface FilePool {
  /** mcfs_open_regular_beneath; keep: a new file is given it. */
  open(rootFd: number, rel: string, flags: number, mode: number, keep?: NewFileOwner): Promise<number>;
  /** mcfs_unlinkat_beneath of what is not a directory. */
  unlink(rootFd: number, rel: string): Promise<number>;
  /**
   * fd closed on a pool thread, nothing waited for: a last close of an unlinked file frees its
   * blocks, which for a big one holds up the caller long. Closed here if it cannot be queued.
   */
  close(fd: number): void;
  /**
   * fd closed once this turn of the event loop ends, with the others given in it: on a pool thread,
   * one handoff for them all, when they are enough to be worth it (a sole node's batch of releases),
   * else on this thread. Nothing waited for.
   */
  closeSoon(fd: number): void;
  /** size bytes of src from its start to dst at its offset, in the kernel; both stay open until then. 0, or -EIO if src is shorter. */
  copy(src: number, dst: number, size: number): Promise<number>;
  /**
   * length bytes of fd at offset written to disk, waited for (a failed write-back of them since fd was
   * opened is reported too), then dropped from the page cache if drop; fd stays open until then. 0 or -errno.
   */
  writeOut(fd: number, offset: number, length: number, drop: boolean): Promise<number>;
  /**
   * head (at most 8 bytes), then length bytes of file at offset, to socket sock, on threads of their
   * own; every byte was read from the file by the time it resolves (never spliced: see send_range).
   * sock is duplicated first (closed by JS meanwhile, its number reused, the bytes still go to the
   * same connection), file stays open until then. Bytes the file no longer has (cut meanwhile) go as
   * zeros: the frame is whole. How many came from the file, or -errno (the connection is left cut
   * short); -ETIMEDOUT if the frame took longer than timeoutMs.
   */
  send(sock: number, head: Uint8Array, file: number, offset: number, length: number, timeoutMs: number): Promise<number>;
  /**
   * A connection to host:port that has sent request (on the same threads as send): its descriptor,
   * non-blocking, for the caller to close; or -errno (-ETIMEDOUT: no answer for timeoutMs).
   */
  dial(host: string, port: number, request: Uint8Array, timeoutMs: number): Promise<number>;
  /**
   * One frame of a bulk answer off sock (its magic first if first), a frame of data written to file
   * at offset, at most max bytes of it (more: -EPROTO), within timeoutMs (else -ETIMEDOUT: a holder
   * that trickles holds no thread for long). rc < 0: the connection failed (-errno), got nothing if
   * it ended before the answer's first byte; else got says what came: data (rc bytes written), the
   * end, the holder's failure (rc its errno), no bulk answer at all (foreign), or the write to file
   * failed (rc its errno).
   */
  receive(sock: number, first: boolean, file: number, offset: number, max: number, timeoutMs: number): Promise<{ rc: number; got: number }>;
  /** Shuts sock down (it stays open): a receive or send under way on it returns at once, failed. */
  cut(sock: number): void;
  /**
   * A thread of kind for one stream of sends (or of a dial and receives), one job at a time, until
   * the returned call; undefined when every one is taken (go another way). Held so, no job waits in
   * a queue behind one waiting on its peer.
   */
  stream(kind: keyof typeof STREAMS): (() => void) | undefined;
}

let pool: FilePool | undefined;

function createFilePool(): FilePool {
  const lib = beneath();
  const waiting = new Map<number, (rc: number, extra: number) => void>();
  let next = 1;
  const results = new Int32Array(BATCH * 3);
  // The callback does not keep Bun's loop alive: this timer does, while calls are out (it never fires).
  const keepAlive = setInterval(() => {}, 2 ** 30);
  keepAlive.unref();
  // Never closed: the pool's threads call it for as long as the process lives.
  const wake = new JSCallback(() => {
    for (;;) {
      const n = lib.mcfs_pool_poll(results, BATCH);
      for (let i = 0; i < n; i++) {
        const token = results[3 * i]!;
        const resolve = waiting.get(token);
        waiting.delete(token);
        resolve?.(results[3 * i + 1]!, results[3 * i + 2]!);
      }
      if (n < BATCH) break;
    }
    if (!waiting.size) keepAlive.unref();
  }, { returns: "void", args: [], threadsafe: true });
  lib.mcfs_pool_start(wake.ptr, STREAMS.send, STREAMS.receive);
  const streaming = { send: 0, receive: 0 };
  /** Queue a job (submit gets its token) and wait for its results. */
  function runBoth(submit: (token: number) => number): Promise<{ rc: number; extra: number }> {
    const token = next;
    next = next >= 0x7fffffff ? 1 : next + 1;
    const rc = submit(token);
    if (rc < 0) return Promise.resolve({ rc, extra: 0 });
    if (!waiting.size) keepAlive.ref();
    return new Promise((resolve) => waiting.set(token, (rc, extra) => resolve({ rc, extra })));
  }
  const run = (submit: (token: number) => number) => runBoth(submit).then((r) => r.rc);
  let closing: number[] = [];
  function closeGiven(): void {
    const fds = closing;
    closing = [];
    if (fds.length < HANDOFF_MIN || lib.mcfs_pool_close_many(new Int32Array(fds), fds.length) < 0) for (const fd of fds) closeSync(fd);
  }
  return {
    open: (rootFd, rel, flags, mode, keep) =>
      run((token) => lib.mcfs_pool_open(token, rootFd, cstr(rel), flags, mode, keep ? 1 : 0, (keep?.uid ?? 0) >>> 0, (keep?.gid ?? 0) >>> 0, cstr(keep?.markName ?? ""), cstr(keep?.mark ?? ""))),
    unlink: (rootFd, rel) => run((token) => lib.mcfs_pool_unlink(token, rootFd, cstr(rel))),
    close(fd) {
      if (lib.mcfs_pool_close(fd) < 0) closeSync(fd);
    },
    closeSoon(fd) {
      if (!closing.length) setImmediate(closeGiven);
      closing.push(fd);
    },
    copy: (src, dst, size) => run((token) => lib.mcfs_pool_copy(token, src, dst, size)),
    writeOut: (fd, offset, length, drop) => run((token) => lib.mcfs_pool_write_out(token, fd, offset, length, drop ? 1 : 0)),
    send: (sock, head, file, offset, length, timeoutMs) => run((token) => lib.mcfs_pool_send(token, sock, head, head.length, file, offset, length, timeoutMs)),
    dial: (host, port, request, timeoutMs) => run((token) => lib.mcfs_pool_dial(token, cstr(host), port, request, request.length, timeoutMs)),
    stream(kind) {
      if (streaming[kind] >= STREAMS[kind]) return undefined;
      streaming[kind]++;
      let held = true;
      return () => {
        if (held) streaming[kind]--;
        held = false;
      };
    },
    receive: (sock, first, file, offset, max, timeoutMs) => runBoth((token) => lib.mcfs_pool_receive(token, sock, first ? 1 : 0, file, offset, max, timeoutMs)).then(({ rc, extra }) => ({ rc, got: extra })),
    cut: (sock) => void lib.mcfs_pool_cut(sock),
  };
}

/** The process's pool, started at its first use. */
export function filePool(): FilePool {
  return (pool ??= createFilePool());
}
