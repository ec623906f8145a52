import type * as http2 from "node:http2";
import { createContextValues, type Interceptor, type StreamRequest, type StreamResponse, type UnaryResponse } from "@connectrpc/connect";
import { fromBinary } from "@bufbuild/protobuf";
import { Peer, ReadRequestSchema, type ReadRequest } from "../gen/mcfs/v1/peer_pb.ts";
import { E, FsError } from "../util/errno.ts";
import { toConnectError } from "./errors.ts";

/**
 * Bytes a chunk's data leaves free in front of it: the gRPC envelope (5) and the Chunk message's
 * field tags and varints (offset: 1 + 10, data length: 1 + 5).
 */
export const FRAME_ROOM = 22;

/** The gRPC path of ReadFile: the one call whose replies are framed here. */
export const READ_FILE_PATH = `/${Peer.typeName}/${Peer.method.readFile.name}`;

/** Writes a varint ending at end (exclusive), backwards; returns where it starts. */
function varintBefore(buf: Uint8Array, end: number, v: number): number {
  const bytes: number[] = [];
  do {
    const low = v % 128;
    v = Math.floor(v / 128);
    bytes.push(v > 0 ? low | 128 : low);
  } while (v > 0);
  let at = end - bytes.length;
  for (const b of bytes) buf[at++] = b;
  return end - bytes.length;
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
  let at = FRAME_ROOM;
  // Empty fields are left out, as protobuf's serializer leaves them: the same bytes on the wire.
  if (data.length > 0) {
    at = varintBefore(buf, at, data.length);
    buf[--at] = 0x12; // field 2 (data), length-delimited
  }
  if (c.offset > 0) {
    at = varintBefore(buf, at, c.offset);
    buf[--at] = 0x08; // field 1 (offset), varint
  }
  const len = buf.length - at;
  at -= 5;
  buf[at] = 0; // not compressed
  new DataView(buf.buffer, buf.byteOffset).setUint32(at + 1, len);
  return buf.subarray(at);
}

/** The request of a gRPC call: one uncompressed message, at most max bytes. */
async function requestOf(req: http2.Http2ServerRequest, max: number): Promise<ReadRequest> {
  const parts: Buffer[] = [];
  let size = 0;
  for await (const p of req as AsyncIterable<Buffer>) {
    if ((size += p.length) > max + 5) throw new FsError(E.EINVAL, `request over ${max} bytes`);
    parts.push(p);
  }
  const body = Buffer.concat(parts);
  if (body.length < 5 || body[0] !== 0 || body.readUInt32BE(1) !== body.length - 5) throw new FsError(E.EINVAL, "not one uncompressed gRPC message");
  return fromBinary(ReadRequestSchema, body.subarray(5));
}

export type ChunkOut = { offset: bigint; data: Uint8Array };

/**
 * A ReadFile call framed here, through Connect interceptors (metrics) as Connect would have shown it
 * to them: a streaming call whose reply is the chunks that call gives.
 */
export async function intercepted(interceptors: Interceptor[], url: string, signal: AbortSignal, request: AsyncIterable<ReadRequest>, call: (r: ReadRequest) => AsyncIterable<ChunkOut>): Promise<AsyncIterable<ChunkOut>> {
  type Next = (r: StreamRequest) => Promise<StreamResponse | UnaryResponse>;
  const inner: Next = async (r) => ({
    stream: true,
    service: Peer,
    method: Peer.method.readFile,
    header: new Headers(),
    trailer: new Headers(),
    message: (async function* () {
      for await (const m of r.message) yield* call(m as ReadRequest);
    })() as StreamResponse["message"],
  });
  const run = interceptors.reduceRight<Next>((next, i) => i(next as Parameters<Interceptor>[0]), inner);
  const reply = await run({
    stream: true,
    service: Peer,
    method: Peer.method.readFile,
    requestMethod: "POST",
    url,
    signal,
    header: new Headers(),
    contextValues: createContextValues(),
    message: request,
  });
  if (!reply.stream) throw new FsError(E.EIO, "an interceptor answered ReadFile with one message");
  return reply.message as AsyncIterable<ChunkOut>;
}

/**
 * ReadFile over gRPC, its replies framed here rather than by Connect's serializer (which copied each
 * chunk three times and zeroed two buffers for it: most of a holder's CPU while it streams a big
 * file). Same wire format, same trailers (grpc-status, grpc-message, mcfs-errno), and the same
 * interceptors see the call. Other protocols and calls stay with Connect.
 */
export async function serveFileFrames(
  req: http2.Http2ServerRequest,
  res: http2.Http2ServerResponse,
  o: { readFile: (r: ReadRequest) => AsyncIterable<ChunkOut>; readMaxBytes: number; interceptors: Interceptor[] },
): Promise<void> {
  const abort = new AbortController();
  // One listener each for the whole stream: a listener added and removed per message cost a sixth of the CPU.
  let drained = () => {};
  res.on("drain", () => drained());
  res.once("close", () => {
    abort.abort();
    drained();
  });
  const request = (async function* () {
    yield await requestOf(req, o.readMaxBytes);
  })();
  res.writeHead(200, { "content-type": "application/grpc+proto" });
  const trailer: Record<string, string> = { "grpc-status": "0" };
  try {
    const chunks = await intercepted(o.interceptors, req.url, abort.signal, request, o.readFile);
    for await (const c of chunks) {
      if (abort.signal.aborted) break;
      // Waits at each message: writing on while HTTP/2 is busy had its queue concatenated (a copy).
      if (!res.write(frameChunk({ offset: Number(c.offset), data: c.data }))) await new Promise<void>((done) => (drained = done));
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
