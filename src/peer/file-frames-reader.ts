import * as http2 from "node:http2";
import { Code, ConnectError } from "@connectrpc/connect";
import type { Http2SessionManager } from "@connectrpc/connect-node";
import { fromBinary, toBinary, create } from "@bufbuild/protobuf";
import { ChunkSchema, ReadRequestSchema, type ReadRequest } from "../gen/mcfs/v1/peer_pb.ts";
import { READ_FILE_PATH, type ChunkOut } from "./file-frames.ts";

/** The gRPC messages of a stream, taken from its pieces as they come: a message within one piece is not copied. */
export function createMessages(): { push(piece: Buffer): void; next(): Buffer | undefined; left(): number } {
  const pieces: Buffer[] = [];
  let have = 0;
  /** The first n bytes held, removed: a view of the first piece if it holds them, else one copy. */
  const take = (n: number): Buffer => {
    if (n === 0) return Buffer.alloc(0);
    const first = pieces[0]!;
    have -= n;
    if (first.length >= n) {
      if (first.length === n) pieces.shift();
      else pieces[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    for (let at = 0; at < n; ) {
      const p = pieces[0]!;
      const k = Math.min(p.length, n - at);
      out.set(p.subarray(0, k), at);
      at += k;
      if (k === p.length) pieces.shift();
      else pieces[0] = p.subarray(k);
    }
    return out;
  };
  return {
    push(piece) {
      pieces.push(piece);
      have += piece.length;
    },
    next() {
      if (have < 5) return undefined;
      const head = pieces[0]!.length >= 5 ? pieces[0]! : take(5);
      const len = head.readUInt32BE(1);
      if (head[0] !== 0) throw new ConnectError("compressed or unknown gRPC frame", Code.Internal);
      if (head !== pieces[0]) {
        // take(5) consumed the header already: put it back until the message is whole.
        pieces.unshift(head);
        have += 5;
      }
      if (have < 5 + len) return undefined;
      take(5);
      return take(len);
    },
    left: () => have,
  };
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

/**
 * The chunks of a ReadFile call read straight off its HTTP/2 stream: Connect's reader copied every
 * message into a zeroed buffer of its own and passed it through several async steps; here a chunk is
 * a view of the bytes as they came (copied only when a message spans pieces). Failures are
 * ConnectErrors (the errno in the trailers' metadata), as from Connect.
 */
export async function* readFileFrames(session: Http2SessionManager, r: ReadRequest, o: FileFramesOptions): AsyncGenerator<ChunkOut> {
  const body = toBinary(ReadRequestSchema, create(ReadRequestSchema, r));
  const frame = Buffer.allocUnsafe(5 + body.length);
  frame[0] = 0;
  frame.writeUInt32BE(body.length, 1);
  frame.set(body, 5);
  const stream = await session.request("POST", READ_FILE_PATH, { ...o.headers, "content-type": "application/grpc+proto", te: "trailers", "grpc-timeout": `${o.timeoutMs}m` }, {});
  let ended: ConnectError | undefined;
  const timer = setTimeout(() => {
    ended = new ConnectError(`ReadFile took over ${o.timeoutMs} ms`, Code.DeadlineExceeded);
    stream.close(http2.constants.NGHTTP2_CANCEL);
  }, o.timeoutMs);
  const abort = () => {
    ended = new ConnectError("ReadFile cancelled", Code.Canceled);
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
        for (let m; (m = messages.next()); ) {
          const c = fromBinary(ChunkSchema, m);
          yield { offset: c.offset, data: c.data };
        }
      }
    } catch (e) {
      throw ended ?? ConnectError.from(e, Code.Unavailable);
    }
    if (ended) throw ended;
    if (status) throw status;
    if (!finished || messages.left() > 0) throw new ConnectError("ReadFile stream ended without its status", Code.Unavailable);
  } finally {
    clearTimeout(timer);
    o.signal?.removeEventListener("abort", abort);
    if (!stream.closed) stream.close(http2.constants.NGHTTP2_CANCEL);
  }
}
