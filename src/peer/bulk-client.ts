import * as fs from "node:fs";
import * as net from "node:net";
import { E, FsError, errnoName } from "../util/errno.ts";
import type { Pieces } from "../util/bytes.ts";
import { createAnswerReader, encodeRequest, type AnswerPart } from "./bulk-protocol.ts";
import { filePool, Got } from "../local/file-pool.ts";

/** A file's bytes at one version, and where the holder should look for them. */
export interface BulkFile {
  ino: number;
  version: number;
  path: string;
}

/** The holder answered nothing a bulk lane would: an older node (its HTTP/2 server closed the connection). Nothing was read. */
export class BulkUnsupported extends FsError {}

/** The holder's port could not be reached at all (why: the socket's error, e.g. ECONNREFUSED). */
export class BulkUnreachable extends FsError {
  constructor(
    message: string,
    readonly why: string,
  ) {
    super(E.EIO, message);
  }
}

/** Writing what arrived to the reader's own file failed (rc: its errno): no other holder would do better. */
export class BulkSinkError extends FsError {}

/** Where readInto's bytes go: fd (the caller's own descriptor), told of each frame once it counts. */
export interface BulkSink {
  fd: number;
  /** n bytes at at were written through fd, and count (the head after them came). */
  landed(at: number, n: number): void | Promise<void>;
}

/** The bulk lane's client: connections to each holder, reused one request at a time. */
export interface BulkClient {
  /** Bytes of f from offset (length 0: to its end), in order. */
  read(address: string, f: BulkFile, offset: number, length: number, signal?: AbortSignal): AsyncIterable<{ offset: number; data: Pieces }>;
  /**
   * The same bytes written by the file threads straight into sink.fd at their offsets, at most limit
   * of them (more: EIO, nothing past it written), over a connection of their own: the JS thread sees
   * each frame's length, not its bytes. Bytes of a frame not followed by the next head (the holder's
   * failure, a cut connection) may be in the file, never landed. False, nothing done, when no file
   * thread is free for it (read then).
   */
  readInto(address: string, f: BulkFile, offset: number, length: number, limit: number, sink: BulkSink, signal?: AbortSignal): Promise<boolean>;
  close(): void;
}

export interface BulkClientOptions {
  secret?: string;
  /** A read with nothing received this long fails (ETIMEDOUT). */
  timeoutMs: number;
  /** For metrics: a read ended (errno 0: whole). */
  observe?(errno: number, seconds: number): void;
}

/** Idle connections kept per holder (parts of a big file come over several at once). */
const IDLE_MAX = 8;
/** An idle connection is closed after this long; the server closes unused ones after 120 s. */
const IDLE_MS = 60_000;

function hostPort(address: string): { host: string; port: number } {
  const at = address.lastIndexOf(":");
  return { host: address.slice(0, at).replace(/^\[(.*)\]$/, "$1"), port: Number(address.slice(at + 1)) };
}

export function createBulkClient(o: BulkClientOptions): BulkClient {
  const idle = new Map<string, net.Socket[]>();
  /** Connections whose read saw no byte for timeoutMs (then closed). */
  const timedOut = new WeakSet<net.Socket>();

  const unidle = (address: string, s: net.Socket) => {
    const l = idle.get(address);
    const i = l?.indexOf(s) ?? -1;
    if (i >= 0) l!.splice(i, 1);
  };

  function connect(address: string): Promise<net.Socket> {
    return new Promise((res, rej) => {
      const s = net.connect(hostPort(address));
      s.setNoDelay(true);
      const failed = (e: NodeJS.ErrnoException) => rej(new BulkUnreachable(`cannot reach ${address}: ${e.message}`, e.code ?? "EIO"));
      s.once("error", failed);
      s.once("connect", () => {
        s.off("error", failed);
        // Errors end a read through its close; an idle connection's are of no one's concern.
        s.on("error", () => {});
        // Idle too long, or a read waiting too long: either way the connection goes.
        s.on("timeout", () => {
          timedOut.add(s);
          s.destroy();
        });
        s.once("close", () => unidle(address, s));
        res(s);
      });
    });
  }

  /** An idle connection to address (reused), else a new one. */
  async function take(address: string): Promise<{ s: net.Socket; reused: boolean }> {
    const list = idle.get(address);
    for (let s; (s = list?.pop()); ) {
      if (!s.destroyed) {
        s.setTimeout(0);
        return { s, reused: true };
      }
    }
    return { s: await connect(address), reused: false };
  }

  function release(address: string, s: net.Socket): void {
    const list = idle.get(address) ?? [];
    if (list.length >= IDLE_MAX) return void s.destroy();
    list.push(s);
    idle.set(address, list);
    s.setTimeout(IDLE_MS);
  }

  /** A request for f's bytes from offset (length 0: to its end), held frame by frame (BulkRequest.held). */
  const request = (f: BulkFile, offset: number, length: number) => encodeRequest({ ...(o.secret === undefined ? {} : { secret: o.secret }), ino: f.ino, version: f.version, path: f.path, offset, length, held: true });

  /** fresh: on a new connection (an idle one the holder closed meanwhile, at its restart, answers nothing). */
  async function* read(address: string, f: BulkFile, offset: number, length: number, signal?: AbortSignal, fresh = false): AsyncIterable<{ offset: number; data: Pieces }> {
    const t0 = performance.now();
    let errno = E.EIO;
    let s: net.Socket;
    let reused: boolean;
    try {
      ({ s, reused } = fresh ? { s: await connect(address), reused: false } : await take(address));
    } catch (e) {
      o.observe?.(errno, (performance.now() - t0) / 1000);
      throw e;
    }
    let again = false;
    const parts: AnswerPart[] = [];
    let closed = false;
    let wake: (() => void) | undefined;
    const poke = () => {
      wake?.();
      wake = undefined;
    };
    const readAnswer = createAnswerReader();
    const onData = (chunk: Buffer) => {
      const { parts: got, rest } = readAnswer(chunk);
      parts.push(...got);
      // Bytes past the answer's end: nothing was asked for them.
      if (rest) s.destroy();
      poke();
    };
    const onClose = () => {
      closed = true;
      poke();
    };
    const onAbort = () => s.destroy();
    s.on("data", onData);
    s.once("close", onClose);
    s.setTimeout(o.timeoutMs);
    signal?.addEventListener("abort", onAbort);
    let done = false;
    let any = false;
    /** The bytes of the frame under way: they count once the next head comes (BulkRequest.held). */
    let held: Buffer[] = [];
    try {
      s.write(request(f, offset, length));
      let at = offset;
      const confirmed = () => {
        const data = held;
        held = [];
        const piece = { offset: at, data };
        for (const d of data) at += d.length;
        return piece;
      };
      for (;;) {
        const p = parts.shift();
        if (!p) {
          if (closed) {
            if (timedOut.has(s)) throw new FsError(E.ETIMEDOUT, `${address} sent nothing of ${f.path} for ${o.timeoutMs} ms`);
            if (!any && reused) {
              again = true;
              break;
            }
            if (!any) throw new BulkUnsupported(E.EIO, `${address} closed the connection without an answer`);
            throw new FsError(E.EIO, `${address} closed the connection in the middle of ${f.path}`);
          }
          await new Promise<void>((res) => (wake = res));
          continue;
        }
        if ("foreign" in p) throw new BulkUnsupported(E.EIO, `${address} answered with something other than a bulk answer`);
        any = true;
        if ("data" in p) held.push(p.data);
        else if ("frame" in p) {
          if (held.length) yield confirmed();
        } else if ("end" in p) {
          if (held.length) yield confirmed();
          done = true;
          errno = 0;
          return;
        } else {
          done = true;
          errno = p.errno;
          throw new FsError(p.errno, `holder ${address} could not send ${f.path}: ${errnoName(p.errno)}`);
        }
      }
    } finally {
      s.off("data", onData);
      s.off("close", onClose);
      signal?.removeEventListener("abort", onAbort);
      s.setTimeout(0);
      // Only a connection whose answer was read to its end can carry the next request.
      if (done && !closed) release(address, s);
      else s.destroy();
      if (!again) o.observe?.(errno, (performance.now() - t0) / 1000);
    }
    // Nothing was read on the old connection.
    if (again) yield* read(address, f, offset, length, signal, true);
  }

  async function readInto(address: string, f: BulkFile, offset: number, length: number, limit: number, sink: BulkSink, signal?: AbortSignal): Promise<boolean> {
    const pool = filePool();
    const thread = pool.stream("receive");
    if (!thread) return false;
    const t0 = performance.now();
    let errno = E.EIO;
    const { host, port } = hostPort(address);
    try {
      const sock = await pool.dial(host, port, request(f, offset, length), o.timeoutMs);
      if (sock < 0) {
        const why = errnoName(-sock);
        throw sock === -E.ETIMEDOUT ? new FsError(E.ETIMEDOUT, `${address} did not answer a connection for ${o.timeoutMs} ms`) : new BulkUnreachable(`cannot reach ${address}: ${why}`, why);
      }
      // A receive waits up to a frame's deadline: given up, the connection is cut under it at once.
      const onAbort = () => pool.cut(sock);
      const givenUp = () => new FsError(E.EIO, `the read of ${f.path} from ${address} was given up`);
      signal?.addEventListener("abort", onAbort);
      try {
        let at = offset;
        let held: { at: number; n: number } | undefined;
        for (let first = true; ; first = false) {
          if (signal?.aborted) throw givenUp();
          const { rc, got } = await pool.receive(sock, first, sink.fd, at, Math.min(offset + limit - at, 0x7fffffff), o.timeoutMs);
          if (signal?.aborted) throw givenUp();
          if (rc < 0) {
            if (rc === -E.ETIMEDOUT) throw new FsError(E.ETIMEDOUT, `${address} sent no whole frame of ${f.path} in ${o.timeoutMs} ms`);
            if (rc === -E.EPROTO) throw new FsError(E.ESTALE, `holder ${address} has more than the ${limit} bytes of ${f.path} asked for`);
            // An older node's HTTP/2 server closes the connection on a bulk request.
            if (got === Got.nothing) throw new BulkUnsupported(E.EIO, `${address} closed the connection without an answer`);
            throw new FsError(E.EIO, `${address} failed in the middle of ${f.path}: ${errnoName(-rc)}`);
          }
          if (got === Got.foreign) throw new BulkUnsupported(E.EIO, `${address} answered with something other than a bulk answer`);
          if (got === Got.writeError) throw new BulkSinkError(rc, `writing ${f.path} as it arrived: ${errnoName(rc)}`);
          if (got === Got.failure) {
            errno = rc;
            throw new FsError(rc, `holder ${address} could not send ${f.path}: ${errnoName(rc)}`);
          }
          if (held) await sink.landed(held.at, held.n);
          held = undefined;
          if (got === Got.end) {
            errno = 0;
            return true;
          }
          held = { at, n: rc };
          at += rc;
        }
      } finally {
        signal?.removeEventListener("abort", onAbort);
        // Every receive on it is over: none is queued past the one awaited.
        fs.closeSync(sock);
      }
    } finally {
      thread();
      o.observe?.(errno, (performance.now() - t0) / 1000);
    }
  }

  return {
    read,
    readInto,
    close() {
      for (const list of idle.values()) for (const s of list) s.destroy();
      idle.clear();
    },
  };
}
