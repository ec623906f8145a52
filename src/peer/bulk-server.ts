import type { Socket } from "node:net";
import { create } from "@bufbuild/protobuf";
import { ReadRequestSchema, type ReadRequest } from "../gen/mcfs/v1/peer_pb.ts";
import { E } from "../util/errno.ts";
import { fromConnectError } from "./errors.ts";
import { frameHead, HEADER_MAX, MAGIC, parseRequest, THREADED_MIN } from "./bulk-protocol.ts";
import { sameSecret, WRONG_SECRET } from "./peer-gate.ts";
import type { OpenedFile } from "./peer-service.ts";

/** Bytes a frame sent by a send thread carries: the reader holds one frame's bytes until the next head. */
const SENT_FRAME = 1 << 20;

/** Sends from the file on the file pool's send threads (no byte through JS), to readers that hold each frame until the next head. */
export interface ThreadSends {
  /** PeerService.openFile. */
  openFile(r: ReadRequest): Promise<OpenedFile | undefined>;
  /** FilePool.send. */
  send(sock: number, head: Uint8Array, file: number, offset: number, length: number, timeoutMs: number): Promise<number>;
  /** A thread for one answer's sends (FilePool.stream); undefined: none free, the answer goes through JS. */
  stream(): (() => void) | undefined;
  /** The connection's idle timeout: re-armed after each send (the threads' sends are unseen by the socket), and the longest one waits. */
  idleMs: number;
}

export interface BulkServeOptions {
  /** Cluster secret every request must carry; undefined with --insecure (the lane is never served with TLS). */
  secret?: string;
  /** The file's bytes as the peer service reads them for ReadFile (its checks: path, holder, identity). */
  readFile(r: ReadRequest): AsyncIterable<{ data: Uint8Array }>;
  /** The connection carried a member's request. */
  proven(): void;
  refused(why: string): void;
  /** A request answered: its errno (0: whole) and time. */
  observe?(errno: number, seconds: number): void;
  threads?: ThreadSends;
}

/** The descriptor under a Bun socket, where Bun shows it (its handle's fd); else undefined. */
function socketFd(s: Socket): number | undefined {
  const fd = (s as unknown as { _handle?: { fd?: unknown } })._handle?.fd;
  return typeof fd === "number" && fd >= 0 ? fd : undefined;
}

/**
 * An answer's frames, one after another: n's head (the magic before the first), with d's bytes if
 * given. The magic goes with the first frame, each frame's head with its bytes: one write each (small
 * writes cost a segment apiece).
 */
function framer(): (n: number, d?: Uint8Array) => Buffer {
  let first = true;
  return (n, d) => {
    const lead = first ? 8 : 4;
    // readFile leaves room in front of a chunk's bytes (for gRPC's framing), in a buffer of its own.
    const out = d && d.byteOffset >= lead ? Buffer.from(d.buffer, d.byteOffset - lead, d.length + lead) : Buffer.concat([Buffer.alloc(lead), d ?? Buffer.alloc(0)]);
    if (first) MAGIC.copy(out, 0);
    out.writeInt32LE(n, lead - 4);
    first = false;
    return out;
  };
}

/** Until the socket can take more, or is gone. */
const drained = (s: Socket) =>
  new Promise<void>((res) => {
    const done = () => {
      s.off("drain", done);
      s.off("close", done);
      res();
    };
    s.on("drain", done);
    s.on("close", done);
  });

/**
 * Serve bulk requests on socket, first: its bytes so far. Nothing is opened or read before a request
 * has shown the secret; a bad request closes the connection.
 */
export function serveBulk(socket: Socket, first: Buffer, o: BulkServeOptions): void {
  const want = o.secret === undefined ? undefined : Buffer.from(o.secret);
  // What arrived of the next request, joined only once it is all there: a header dripped a byte at a
  // time would otherwise be copied again at every byte, before its caller shows the secret.
  let chunks: Buffer[] = [first];
  let total = first.length;
  let need = 8;
  let busy = false;

  /**
   * f's bytes asked for by r, sent by a send thread to sock, each frame checked once it went: a failure's
   * head takes it back. Nothing thrown: the errno sent (0: whole); a send cut short closes the connection.
   */
  async function sendByThread(k: ThreadSends, f: OpenedFile, sock: number, from: number, end: number): Promise<number> {
    const head = framer();
    const sent = async (n: number, at = 0, length = 0) => {
      const rc = await k.send(sock, head(n), f.fd, at, length, k.idleMs);
      if (rc < 0) socket.destroy();
      else socket.setTimeout(k.idleMs);
      return rc;
    };
    try {
      // Bytes JS has not handed the kernel yet go first (an earlier answer's end).
      if (socket.writableLength > 0) await drained(socket);
      for (let off = from; off < end; ) {
        if (socket.destroyed) return E.EIO;
        const n = Math.min(SENT_FRAME, end - off);
        const rc = await sent(n, off, n);
        if (rc < 0) return -rc;
        const errno = !f.intact() ? E.ESTALE : rc < n ? E.EIO : 0;
        if (errno) {
          const back = await sent(-errno);
          return back < 0 ? -back : errno;
        }
        f.served(n);
        off += n;
      }
      const rc = await sent(0);
      return rc < 0 ? -rc : 0;
    } finally {
      f.close();
    }
  }

  async function answer(r: ReadRequest, holds: boolean): Promise<void> {
    const t0 = performance.now();
    let errno = 0;
    const framed = framer();
    // Each frame is written once the next chunk is read, the last one with the end: a small file goes in one write.
    let held: Uint8Array | undefined;
    try {
      const sock = holds && o.threads ? socketFd(socket) : undefined;
      const thread = sock !== undefined ? o.threads!.stream() : undefined;
      try {
        const f = thread ? await o.threads!.openFile(r) : undefined;
        if (f) {
          const from = Number(r.offset);
          const end = r.length ? Math.min(f.size, from + Number(r.length)) : f.size;
          if (end - from >= THREADED_MIN) {
            errno = await sendByThread(o.threads!, f, sock!, from, end);
            return;
          }
          f.close();
        }
      } finally {
        thread?.();
      }
      for await (const ch of o.readFile(r)) {
        if (socket.destroyed) return;
        const n = ch.data.length;
        if (!n) continue;
        // The socket may hold the buffer until it is sent: readFile gives a fresh one each chunk.
        const f = framed(n, ch.data);
        if (held && !socket.write(held)) await drained(socket);
        held = f;
      }
      const end = framed(0);
      socket.write(held ? Buffer.concat([held, end]) : end);
      held = undefined;
    } catch (e) {
      errno = fromConnectError(e).errno || E.EIO;
      // What was read before the failure goes first: the reader keeps the order of the bytes.
      if (!socket.destroyed) socket.write(held ? Buffer.concat([held, framed(-errno)]) : framed(-errno));
    } finally {
      o.observe?.(errno, (performance.now() - t0) / 1000);
    }
  }

  function next(): void {
    if (busy || socket.destroyed || total < need) return;
    const buf = chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks, total);
    chunks = [buf];
    const p = parseRequest(buf);
    if ("need" in p) {
      need = p.need;
      return;
    }
    if ("refused" in p) {
      o.refused(p.refused);
      return void socket.destroy();
    }
    const rest = buf.subarray(p.used);
    chunks = [rest];
    total = rest.length;
    need = 8;
    if (want && !sameSecret(want, p.request.secret ?? "")) {
      o.refused(WRONG_SECRET);
      return void socket.end(Buffer.concat([MAGIC, frameHead(-E.EACCES)]));
    }
    o.proven();
    busy = true;
    const r = p.request;
    void answer(create(ReadRequestSchema, { path: r.path, ino: BigInt(r.ino), version: BigInt(r.version), offset: BigInt(r.offset), length: BigInt(r.length) }), r.held === true).finally(() => {
      busy = false;
      next();
    });
  }

  socket.on("data", (d: Buffer) => {
    chunks.push(d);
    total += d.length;
    // A member sends its next request after the answer: more than one header's worth meanwhile is not one.
    if (total > HEADER_MAX + 8) {
      o.refused("requests sent ahead of their answers");
      return void socket.destroy();
    }
    next();
  });
  next();
}
