import { JSCallback } from "bun:ffi";
import { beneath } from "./beneath-native.ts";
import { cstr } from "../util/c-string.ts";

/** Results taken per poll (token, result pairs). */
const BATCH = 256;

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
  /** size bytes of src from its start to dst at its offset, in the kernel; both stay open until then. 0, or -EIO if src is shorter. */
  copy(src: number, dst: number, size: number): Promise<number>;
  /**
   * length bytes of fd at offset written to disk, waited for (a failed write-back of them since fd was
   * opened is reported too), then dropped from the page cache if drop; fd stays open until then. 0 or -errno.
   */
  writeOut(fd: number, offset: number, length: number, drop: boolean): Promise<number>;
  /**
   * head (at most 8 bytes), then length bytes of file at offset, to socket sock, by the kernel
   * (sendfile), on threads of their own; sock is duplicated first (closed by JS meanwhile, its number
   * reused, the bytes still go to the same connection), file stays open until then. Bytes the file no
   * longer has (cut meanwhile) go as zeros: the frame is whole. How many came from the file, or -errno
   * (the connection is left cut short); -ETIMEDOUT if the socket took nothing for timeoutMs.
   */
  send(sock: number, head: Uint8Array, file: number, offset: number, length: number, timeoutMs: number): Promise<number>;
}

let pool: FilePool | undefined;

function createFilePool(): FilePool {
  const lib = beneath();
  const waiting = new Map<number, (rc: number) => void>();
  let next = 1;
  const results = new Int32Array(BATCH * 2);
  // The callback does not keep Bun's loop alive: this timer does, while calls are out (it never fires).
  const keepAlive = setInterval(() => {}, 2 ** 30);
  keepAlive.unref();
  // Never closed: the pool's threads call it for as long as the process lives.
  const wake = new JSCallback(() => {
    for (;;) {
      const n = lib.mcfs_pool_poll(results, BATCH);
      for (let i = 0; i < n; i++) {
        const token = results[2 * i]!;
        const resolve = waiting.get(token);
        waiting.delete(token);
        resolve?.(results[2 * i + 1]!);
      }
      if (n < BATCH) break;
    }
    if (!waiting.size) keepAlive.unref();
  }, { returns: "void", args: [], threadsafe: true });
  const started = lib.mcfs_pool_start(wake.ptr);
  if (started < 0) throw new Error(`cannot start the file threads: errno ${-started}`);
  /** Queue a job (submit gets its token) and wait for its result. */
  function run(submit: (token: number) => number): Promise<number> {
    const token = next;
    next = next >= 0x7fffffff ? 1 : next + 1;
    const rc = submit(token);
    if (rc < 0) return Promise.resolve(rc);
    if (!waiting.size) keepAlive.ref();
    return new Promise((resolve) => waiting.set(token, resolve));
  }
  return {
    open: (rootFd, rel, flags, mode, keep) =>
      run((token) => lib.mcfs_pool_open(token, rootFd, cstr(rel), flags, mode, keep ? 1 : 0, (keep?.uid ?? 0) >>> 0, (keep?.gid ?? 0) >>> 0, cstr(keep?.markName ?? ""), cstr(keep?.mark ?? ""))),
    unlink: (rootFd, rel) => run((token) => lib.mcfs_pool_unlink(token, rootFd, cstr(rel))),
    copy: (src, dst, size) => run((token) => lib.mcfs_pool_copy(token, src, dst, size)),
    writeOut: (fd, offset, length, drop) => run((token) => lib.mcfs_pool_write_out(token, fd, offset, length, drop ? 1 : 0)),
    send: (sock, head, file, offset, length, timeoutMs) => run((token) => lib.mcfs_pool_send(token, sock, head, head.length, file, offset, length, timeoutMs)),
  };
}

/** The process's pool, started at its first use. */
export function filePool(): FilePool {
  return (pool ??= createFilePool());
}
