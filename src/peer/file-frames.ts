import type * as http2 from "node:http2";
import { Code, ConnectError, createContextValues, type Interceptor, type StreamRequest, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { Peer, ReadFilesRequestSchema, ReadRequestSchema, type ReadFilesRequest, type ReadRequest } from "../gen/mcfs/v1/peer_pb.ts";
import { E, FsError } from "../util/errno.ts";
import { toConnectError } from "./errors.ts";

/**
 * Bytes a chunk's data leaves free in front of it: the gRPC envelope (5) and the Chunk message's
 * field tags and varints (offset: 1 + 10, data length: 1 + 5).
 */
export const FRAME_ROOM = 22;

/** The gRPC paths of ReadFile and ReadFiles: the calls whose replies are framed here. */
export const READ_FILE_PATH = `/${Peer.typeName}/${Peer.method.readFile.name}`;
export const READ_FILES_PATH = `/${Peer.typeName}/${Peer.method.readFiles.name}`;

/** Bytes of v as a protobuf varint. */
function varintLength(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

/** Writes v as a varint at at; returns where it ends. */
function varintAt(buf: Uint8Array, at: number, v: number): number {
  while (v >= 128) {
    buf[at++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  buf[at++] = v;
  return at;
}

/**
 * One gRPC message of a Chunk, framed in the room in front of its data (a copy only where there is
 * none): the same bytes Connect's serializer writes, without its three copies of every chunk.
 */
export function frameChunk(c: { offset: number; data: Uint8Array }): Uint8Array {
  let data = c.data;
  if (data.byteOffset < FRAME_ROOM) {
    const room = new Uint8Array(FRAME_ROOM + data.length);
    room.set(data, FRAME_ROOM);
    data = room.subarray(FRAME_ROOM);
  }
  const buf = new Uint8Array(data.buffer, data.byteOffset - FRAME_ROOM, FRAME_ROOM + data.length);
  // Empty fields are left out, as protobuf's serializer leaves them: the same bytes on the wire.
  const head = (c.offset > 0 ? 1 + varintLength(c.offset) : 0) + (data.length > 0 ? 1 + varintLength(data.length) : 0);
  const start = FRAME_ROOM - head - 5;
  buf[start] = 0; // not compressed
  new DataView(buf.buffer, buf.byteOffset).setUint32(start + 1, head + data.length);
  let at = start + 5;
  if (c.offset > 0) {
    buf[at++] = 0x08; // field 1 (offset), varint
    at = varintAt(buf, at, c.offset);
  }
  if (data.length > 0) {
    buf[at++] = 0x12; // field 2 (data), length-delimited
    varintAt(buf, at, data.length);
  }
  return buf.subarray(start);
}

export type PieceOut = { index: number; offset: bigint; data: Uint8Array; errno: number; last: boolean };

/** Bytes of one FilePiece message's fields (proto3: fields at their default are left out, as the serializer does). */
function pieceLength(p: PieceOut): number {
  const offset = Number(p.offset);
  return (p.index ? 1 + varintLength(p.index) : 0) + (offset ? 1 + varintLength(offset) : 0) + (p.data.length ? 1 + varintLength(p.data.length) + p.data.length : 0) + (p.errno ? 1 + varintLength(p.errno) : 0) + (p.last ? 2 : 0);
}

/**
 * One gRPC message of FilePieces, framed here: the bytes Connect's serializer writes (fields in
 * number order), with each piece's data copied once instead of three times. Into a buffer of its own:
 * HTTP/2 may still hold a message written when the next is framed.
 */
export function framePieces(m: { pieces: PieceOut[] }): Uint8Array {
  const lengths = m.pieces.map(pieceLength);
  let body = 0;
  for (const l of lengths) body += 1 + varintLength(l) + l;
  const buf = Buffer.allocUnsafe(5 + body);
  buf[0] = 0; // not compressed
  buf.writeUInt32BE(body, 1);
  let at = 5;
  for (const [i, p] of m.pieces.entries()) {
    const offset = Number(p.offset);
    buf[at++] = 0x0a; // field 1 (pieces), length-delimited
    at = varintAt(buf, at, lengths[i]!);
    if (p.index) {
      buf[at++] = 0x08;
      at = varintAt(buf, at, p.index);
    }
    if (offset) {
      buf[at++] = 0x10;
      at = varintAt(buf, at, offset);
    }
    if (p.data.length) {
      buf[at++] = 0x1a;
      at = varintAt(buf, at, p.data.length);
      buf.set(p.data, at);
      at += p.data.length;
    }
    if (p.errno) {
      buf[at++] = 0x20;
      at = varintAt(buf, at, p.errno);
    }
    if (p.last) {
      buf[at++] = 0x28;
      buf[at++] = 1;
    }
  }
  return buf;
}

/** The request of a gRPC call: one uncompressed message, at most max bytes. */
async function requestOf<S extends DescMessage>(req: http2.Http2ServerRequest, max: number, schema: S): Promise<MessageShape<S>> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const p of req as AsyncIterable<Buffer>) {
    // As Connect answers a message over its readMaxBytes.
    if ((size += p.length) > max + 5) throw new ConnectError(`message larger than configured max ${max}`, Code.ResourceExhausted);
    parts.push(p);
  }
  const body = Buffer.concat(parts);
  if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) throw new FsError(E.EINVAL, "not one uncompressed gRPC message");
  return fromBinary(schema, body.subarray(5));
}

export type ChunkOut = { offset: bigint; data: Uint8Array };

/**
 * A ReadFile (or ReadFiles) call framed here, through Connect interceptors (metrics) as Connect would
 * have shown it to them: a streaming call whose reply is the messages that call gives.
 */
export async function intercepted<I, O>(interceptors: Interceptor[], url: string, signal: AbortSignal, request: AsyncIterable<I>, call: (r: I) => AsyncIterable<O>, method: typeof Peer.method.readFile | typeof Peer.method.readFiles = Peer.method.readFile): Promise<AsyncIterable<O>> {
  type Next = (r: StreamRequest) => Promise<StreamResponse | UnaryResponse>;
  const inner: Next = async (r) => ({
    stream: true,
    service: Peer,
    method,
    header: new Headers(),
    trailer: new Headers(),
    message: (async function* () {
      for await (const m of r.message) yield* call(m as I);
    })() as StreamResponse["message"],
  });
  const run = interceptors.reduceRight<Next>((next, i) => i(next as Parameters<Interceptor>[0]), inner);
  const reply = await run({
    stream: true,
    service: Peer,
    method,
    requestMethod: "POST",
    url,
    signal,
    header: new Headers(),
    contextValues: createContextValues(),
    message: request as StreamRequest["message"],
  });
  if (!reply.stream) throw new FsError(E.EIO, `an interceptor answered ${method.name} with one message`);
  return reply.message as AsyncIterable<O>;
}

/** A call whose replies are framed here: how its request is read and each reply message framed. */
interface FramedCall<I, O> {
  method: typeof Peer.method.readFile | typeof Peer.method.readFiles;
  request(req: http2.Http2ServerRequest, max: number): Promise<I>;
  call(r: I): AsyncIterable<O>;
  frame(m: O): Uint8Array;
}

/** The calls framed here, by gRPC path. */
export function framedCalls(o: { readFile: (r: ReadRequest) => AsyncIterable<ChunkOut>; readFiles: (r: ReadFilesRequest) => AsyncIterable<{ pieces: PieceOut[] }> }): Map<string, FramedCall<never, never>> {
  const readFile: FramedCall<ReadRequest, ChunkOut> = {
    method: Peer.method.readFile,
    request: (req, max) => requestOf(req, max, ReadRequestSchema),
    call: o.readFile,
    frame: (c) => frameChunk({ offset: Number(c.offset), data: c.data }),
  };
  const readFiles: FramedCall<ReadFilesRequest, { pieces: PieceOut[] }> = {
    method: Peer.method.readFiles,
    request: (req, max) => requestOf(req, max, ReadFilesRequestSchema),
    call: o.readFiles,
    frame: framePieces,
  };
  return new Map<string, FramedCall<never, never>>([
    [READ_FILE_PATH, readFile as unknown as FramedCall<never, never>],
    [READ_FILES_PATH, readFiles as unknown as FramedCall<never, never>],
  ]);
}

/**
 * ReadFile and ReadFiles over gRPC, their replies framed here rather than by Connect's serializer
 * (which copied each chunk three times and zeroed two buffers for it: most of a holder's CPU while it
 * streams files). Same wire format, same trailers (grpc-status, grpc-message, mcfs-errno), and the
 * same interceptors see the call. Other protocols and calls stay with Connect.
 */
export async function serveFramed<I, O>(req: http2.Http2ServerRequest, res: http2.Http2ServerResponse, f: FramedCall<I, O>, o: { readMaxBytes: number; interceptors: Interceptor[] }): Promise<void> {
  const abort = new AbortController();
  // One listener each for the whole stream: a listener added and removed per message cost a sixth of the CPU.
  let drained = () => {};
  res.on("drain", () => drained());
  res.once("close", () => {
    abort.abort();
    drained();
  });
  const request = (async function* () {
    yield await f.request(req, o.readMaxBytes);
  })();
  res.writeHead(200, { "content-type": "application/grpc+proto" });
  const trailer: Record<string, string> = { "grpc-status": "0" };
  try {
    const messages = await intercepted(o.interceptors, req.url, abort.signal, request, (r: I) => f.call(r), f.method);
    for await (const m of messages) {
      if (abort.signal.aborted) break;
      // Waits at each message: writing on while HTTP/2 is busy had its queue concatenated (a copy).
      if (!res.write(f.frame(m))) await new Promise<void>((done) => (drained = done));
    }
  } catch (e) {
    const ce = toConnectError(e);
    trailer["grpc-status"] = String(ce.code);
    trailer["grpc-message"] = encodeURIComponent(ce.rawMessage);
    ce.metadata.forEach((v, k) => void (trailer[k] = v));
  }
  if (abort.signal.aborted) return;
  res.addTrailers(trailer);
  res.end();
}
