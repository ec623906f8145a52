import * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Http2SessionManager } from "@connectrpc/connect-node";
import { fromBinary, toBinary, create } from "@bufbuild/protobuf";
import { ChunkSchema, FilePiecesSchema, ReadFilesRequestSchema, ReadRequestSchema, type ReadFilesRequest, type ReadRequest } from "../gen/mcfs/v1/peer_pb.ts";
import { READ_FILE_PATH, READ_FILES_PATH } from "./file-frames.ts";

/** Largest reply message taken: a holder sends at most 128 KiB of data a message (gRPC's default receive limit). */
const MESSAGE_MAX = 4 << 20;

/** The gRPC messages of a stream, taken from its pieces as they come, each as views of the pieces it lies in: never copied. */
export function createMessages(): { push(piece: Buffer): void; next(): Buffer[] | undefined; left(): number } {
  const pieces: Buffer[] = [];
  let have = 0;
  /** The first n bytes held, removed. */
  const take = (n: number): Buffer[] => {
    const out: Buffer[] = [];
    have -= n;
    while (n > 0) {
      const p = pieces[0]!;
      if (p.length <= n) {
        out.push(p);
        pieces.shift();
        n -= p.length;
      } else {
        out.push(p.subarray(0, n));
        pieces[0] = p.subarray(n);
        n = 0;
      }
    }
    return out;
  };
  return {
    push(piece) {
      if (!piece.length) return;
      pieces.push(piece);
      have += piece.length;
    },
    next() {
      if (have < 5) return undefined;
      const head = pieces[0]!.length >= 5 ? pieces[0]! : firstBytes(pieces, 5);
      if (head[0] !== 0) throw new ConnectError("compressed or unknown gRPC frame", Code.Internal);
      const len = head.readUInt32BE(1);
      // Refused before its bytes pile up here, whatever the peer says they are.
      if (len > MESSAGE_MAX) throw new ConnectError(`a reply message of ${len} bytes, larger than ${MESSAGE_MAX}`, Code.ResourceExhausted);
      if (have < 5 + len) return undefined;
      take(5);
      return take(len);
    },
    left: () => have,
  };
}

/** A copy of the first n bytes of parts (or all of them, if fewer). */
function firstBytes(parts: Buffer[], n: number): Buffer {
  const out = Buffer.allocUnsafe(n);
  let at = 0;
  for (const p of parts) {
    if (at >= n) break;
    at += p.copy(out, at, 0, Math.min(p.length, n - at));
  }
  return out.subarray(0, at);
}

/** Reads protobuf fields off a message held in pieces; undefined where the bytes are not what it expects. */
function partsCursor(parts: Buffer[]) {
  let i = 0;
  let at = 0;
  const total = parts.reduce((n, p) => n + p.length, 0);
  let pos = 0;
  const byte = (): number | undefined => {
    while (i < parts.length && at >= parts[i]!.length) {
      i++;
      at = 0;
    }
    if (i >= parts.length) return undefined;
    pos++;
    return parts[i]![at++];
  };
  return {
    total,
    pos: () => pos,
    done: () => pos >= total,
    byte,
    /** A varint up to 2^53 (larger: undefined). */
    varint(): number | undefined {
      let v = 0;
      for (let scale = 1; scale <= 2 ** 49; scale *= 128) {
        const b = byte();
        if (b === undefined) return undefined;
        v += (b & 127) * scale;
        if (b < 128) return v;
      }
      return undefined;
    },
    /** The next n bytes as views of the pieces they lie in. */
    views(n: number): Buffer[] | undefined {
      if (pos + n > total) return undefined;
      const out: Buffer[] = [];
      pos += n;
      while (n > 0) {
        const p = parts[i]!;
        const take = Math.min(n, p.length - at);
        if (take > 0) out.push(p.subarray(at, at + take));
        n -= take;
        at += take;
        if (at >= p.length) {
          i++;
          at = 0;
        }
      }
      return out;
    },
  };
}

/** A chunk of a ReadFile reply: its data as the pieces it arrived in, in order. */
export interface ChunkIn {
  offset: bigint;
  data: Buffer[];
}

/**
 * A Chunk message from its pieces. In the shape frameChunk writes (an optional offset, then the data
 * to the message's end) the data stays in its pieces; any other encoding is decoded whole.
 */
export function chunkOf(parts: Buffer[]): ChunkIn {
  const c = partsCursor(parts);
  let tag = c.byte();
  let offset: number | undefined = 0;
  if (tag === 0x08) {
    offset = c.varint();
    tag = c.byte();
  }
  if (offset !== undefined) {
    if (tag === undefined) return { offset: BigInt(offset), data: [] };
    if (tag === 0x12) {
      const n = c.varint();
      const data = n === undefined || c.pos() + n !== c.total ? undefined : c.views(n);
      if (data) return { offset: BigInt(offset), data };
    }
  }
  const m = fromBinary(ChunkSchema, parts.length === 1 ? parts[0]! : Buffer.concat(parts));
  return { offset: m.offset, data: [Buffer.from(m.data.buffer, m.data.byteOffset, m.data.length)] };
}

/** A gRPC status of a response (headers of a trailers-only reply, or its trailers) as an error, if not OK. */
function statusError(h: http2.IncomingHttpHeaders): ConnectError | undefined {
  const status = h["grpc-status"];
  if (status === undefined || status === "0") return undefined;
  const meta = new Headers();
  for (const [k, v] of Object.entries(h)) if (typeof v === "string" && !k.startsWith(":")) meta.set(k, v);
  const msg = typeof h["grpc-message"] === "string" ? decodeURIComponent(h["grpc-message"]) : `gRPC status ${status}`;
  return new ConnectError(msg, Number(status) as Code, meta);
}

export interface FileFramesOptions {
  headers: Record<string, string>;
  timeoutMs: number;
  signal?: AbortSignal;
}

/** HTTP/2 flow-control window of a peer connection and of each of its streams. */
export const WINDOW = 16 << 20;

const widened = new WeakSet<http2.Http2Session>();
/**
 * The connection's window raised to WINDOW, once: SETTINGS raise only the streams' windows, and the
 * connection's own stays at 64 KiB, so a holder sent 64 KiB at a time, each waiting for this node's
 * JavaScript to send a window update (a batch of small files during a workflow: 75 ms a batch, 21 raised).
 */
function widen(s: http2.Http2Session | undefined): void {
  if (!s || widened.has(s)) return;
  widened.add(s);
  s.setLocalWindowSize(WINDOW);
}

/**
 * The reply messages of a call read straight off its HTTP/2 stream, each as the pieces of the stream
 * it came in: Connect's reader copied every message into a zeroed buffer of its own and passed it
 * through several async steps. Failures are ConnectErrors (the errno in the trailers' metadata), as
 * from Connect.
 */
async function* readFrames(session: Http2SessionManager, path: string, call: string, body: Uint8Array, o: FileFramesOptions): AsyncGenerator<Buffer[]> {
  const frame = Buffer.allocUnsafe(5 + body.length);
  frame[0] = 0;
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  const stream = await session.request("POST", path, { ...o.headers, "content-type": "application/grpc+proto", te: "trailers", "grpc-timeout": `${o.timeoutMs}m` }, {});
  widen(stream.session);
  let ended: ConnectError | undefined;
  const timer = setTimeout(() => {
    ended = new ConnectError(`${call} took over ${o.timeoutMs} ms`, Code.DeadlineExceeded);
    stream.close(http2.constants.NGHTTP2_CANCEL);
  }, o.timeoutMs);
  const abort = () => {
    ended = new ConnectError(`${call} cancelled`, Code.Canceled);
    stream.close(http2.constants.NGHTTP2_CANCEL);
  };
  o.signal?.addEventListener("abort", abort);
  let status: ConnectError | undefined;
  let finished = false;
  stream.once("response", (h) => {
    status ??= h[":status"] === 200 ? statusError(h) : new ConnectError(`HTTP ${h[":status"]}`, Code.Unavailable);
    finished ||= h["grpc-status"] !== undefined;
  });
  stream.once("trailers", (h) => {
    status ??= statusError(h);
    finished = true;
  });
  try {
    stream.end(frame);
    const messages = createMessages();
    try {
      for await (const piece of stream as AsyncIterable<Buffer>) {
        session.notifyResponseByteRead(stream);
        messages.push(piece);
        for (let m; (m = messages.next()); ) yield m;
      }
    } catch (e) {
      throw ended ?? ConnectError.from(e, Code.Unavailable);
    }
    if (ended) throw ended;
    if (status) throw status;
    if (!finished || messages.left() > 0) throw new ConnectError(`${call} stream ended without its status`, Code.Unavailable);
  } finally {
    clearTimeout(timer);
    o.signal?.removeEventListener("abort", abort);
    if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
  }
}

/** The chunks of a ReadFile call: each the pieces of the stream its bytes came in, never copied. */
export async function* readFileFrames(session: Http2SessionManager, r: ReadRequest, o: FileFramesOptions): AsyncGenerator<ChunkIn> {
  for await (const m of readFrames(session, READ_FILE_PATH, "ReadFile", toBinary(ReadRequestSchema, create(ReadRequestSchema, r)), o)) yield chunkOf(m);
}

/** One file's piece of a ReadFiles reply: its data as the pieces of the stream it came in. */
export interface PieceIn {
  index: number;
  offset: number;
  data: Buffer[];
  errno: number;
  last: boolean;
}

/**
 * A FilePieces message from its pieces, in the shape framePieces writes (each piece's fields in
 * number order, the known ones only): the data stays in the stream's pieces (joining a message took a
 * sixth of a reader's CPU). Any other encoding is decoded whole.
 */
export function piecesOf(parts: Buffer[]): PieceIn[] {
  const c = partsCursor(parts);
  const out: PieceIn[] = [];
  while (!c.done()) {
    if (c.byte() !== 0x0a) return decodedWhole(parts);
    const len = c.varint();
    if (len === undefined) return decodedWhole(parts);
    const end = c.pos() + len;
    const p: PieceIn = { index: 0, offset: 0, data: [], errno: 0, last: false };
    let field = 0;
    while (c.pos() < end) {
      const tag = c.byte();
      if (tag === undefined) return decodedWhole(parts);
      const n = tag >> 3;
      // Fields in number order, each once, data length-delimited and the rest varints.
      if (n <= field || n > 5 || (tag & 7) !== (n === 3 ? 2 : 0)) return decodedWhole(parts);
      const v = c.varint();
      if (v === undefined) return decodedWhole(parts);
      field = n;
      if (n === 1) p.index = v;
      else if (n === 2) p.offset = v;
      else if (n === 4) p.errno = v;
      else if (n === 5) p.last = v !== 0;
      else {
        const d = v > end - c.pos() ? undefined : c.views(v);
        if (!d) return decodedWhole(parts);
        p.data = d;
      }
    }
    if (c.pos() !== end) return decodedWhole(parts);
    out.push(p);
  }
  return out;
}

function decodedWhole(parts: Buffer[]): PieceIn[] {
  const m = fromBinary(FilePiecesSchema, parts.length === 1 ? parts[0]! : Buffer.concat(parts));
  return m.pieces.map((p) => ({ index: p.index, offset: Number(p.offset), data: [Buffer.from(p.data.buffer, p.data.byteOffset, p.data.length)], errno: p.errno, last: p.last }));
}

/** The messages of a ReadFiles call, each its files' pieces, their data left in the stream's pieces. */
export async function* readFilesFrames(session: Http2SessionManager, r: ReadFilesRequest, o: FileFramesOptions): AsyncGenerator<PieceIn[]> {
  for await (const m of readFrames(session, READ_FILES_PATH, "ReadFiles", toBinary(ReadFilesRequestSchema, create(ReadFilesRequestSchema, r)), o)) yield piecesOf(m);
}
