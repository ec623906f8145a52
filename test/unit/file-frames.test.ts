import { describe, expect, test } from "bun:test";
import * as http2 from "node:http2";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { Http2SessionManager } from "@connectrpc/connect-node";
import { ChunkSchema, FilePiecesSchema, ReadFilesRequestSchema } from "../../src/gen/mcfs/v1/peer_pb.ts";
import { FRAME_ROOM, frameChunk, framePieces, type PieceOut } from "../../src/peer/file-frames.ts";
import { chunkOf, createMessages, piecesOf, readFilesFrames, WINDOW } from "../../src/peer/file-frames-reader.ts";
import { waitFor } from "../helpers/env.ts";

/** A gRPC message as Connect frames it: flags, length, the protobuf serializer's bytes. */
function connectFrame(offset: number, data: Uint8Array): Buffer {
  const body = toBinary(ChunkSchema, create(ChunkSchema, { offset: BigInt(offset), data }));
  const head = Buffer.alloc(5);
  head.writeUInt32BE(body.length, 1);
  return Buffer.concat([head, body]);
}

describe("ReadFile framed by hand", () => {
  const sizes = [0, 1, 127, 128, 16_383, 16_384, 131_072];
  const offsets = [0, 1, 127, 128, 2 ** 31, 2 ** 40 + 3, Number.MAX_SAFE_INTEGER];

  test("each chunk is framed byte for byte as Connect frames it, with room in front of its data or without", () => {
    for (const size of sizes) {
      for (const offset of offsets) {
        const data = Buffer.from(Array.from({ length: size }, (_, i) => (i * 31 + size) & 255));
        const roomy = Buffer.allocUnsafe(FRAME_ROOM + size).subarray(FRAME_ROOM);
        roomy.set(data);
        const want = connectFrame(offset, data);
        expect(Buffer.from(frameChunk({ offset, data: roomy })).equals(want)).toBe(true);
        expect(Buffer.from(frameChunk({ offset, data: new Uint8Array(data) })).equals(want)).toBe(true);
      }
    }
  });

  test("messages are taken whole from a stream cut into pieces anywhere, their data left in the pieces, and nothing is left over", () => {
    const frames = sizes.flatMap((size, i) => offsets.map((offset) => ({ offset, data: Buffer.alloc(size, i + 1) })));
    const stream = Buffer.concat(frames.map((f) => connectFrame(f.offset, f.data)));
    for (const cut of [1, 2, 3, 5, 7, 4096, 16_374, 100_000, stream.length]) {
      const m = createMessages();
      const got: { offset: number; data: Uint8Array }[] = [];
      for (let at = 0; at < stream.length; at += cut) {
        m.push(stream.subarray(at, at + cut));
        for (let msg; (msg = m.next()); ) {
          const c = chunkOf(msg);
          got.push({ offset: Number(c.offset), data: Buffer.concat(c.data) });
          // Views of what was pushed, never copies: the stream's pieces are not copied again.
          expect(c.data.every((d) => d.buffer === stream.buffer)).toBe(true);
        }
      }
      expect(m.left()).toBe(0);
      expect(got.length).toBe(frames.length);
      for (const [i, f] of frames.entries()) {
        expect(got[i]!.offset).toBe(f.offset);
        expect(Buffer.from(got[i]!.data).equals(f.data)).toBe(true);
      }
    }
  });
});

test("a reply message declared larger than any a holder sends is refused as soon as its length is read, before its bytes are kept", () => {
  const m = createMessages();
  const head = Buffer.from([0, 0, 0, 0, 0]);
  head.writeUInt32BE(0xffff_ffff, 1);
  m.push(head);
  expect(() => m.next()).toThrow(/larger than/);
});

test("a Chunk encoded otherwise than frameChunk does (fields reordered, unknown ones, offsets past 2^53) is decoded whole", () => {
  const data = Buffer.from("hello, pieces");
  const varint = (v: bigint) => {
    const out: number[] = [];
    for (; v >= 128n; v >>= 7n) out.push(Number(v & 127n) | 128);
    out.push(Number(v));
    return out;
  };
  const cases: { bytes: number[]; offset: bigint }[] = [
    // data first, offset after
    { bytes: [0x12, data.length, ...data, 0x08, ...varint(300n)], offset: 300n },
    // an unknown field 5 (varint) after the data
    { bytes: [0x08, 7, 0x12, data.length, ...data, 0x28, 1], offset: 7n },
    // an offset that takes ten bytes of varint
    { bytes: [0x08, ...varint(2n ** 63n + 5n), 0x12, data.length, ...data], offset: 2n ** 63n + 5n },
  ];
  for (const { bytes, offset } of cases) {
    const whole = Buffer.from(bytes);
    expect(fromBinary(ChunkSchema, whole).offset).toBe(offset);
    for (const cut of [1, 3, whole.length]) {
      const parts: Buffer[] = [];
      for (let at = 0; at < whole.length; at += cut) parts.push(whole.subarray(at, at + cut));
      const c = chunkOf(parts);
      expect(c.offset).toBe(offset);
      expect(Buffer.concat(c.data).equals(data)).toBe(true);
    }
  }
  expect(chunkOf([])).toEqual({ offset: 0n, data: [] });
});

describe("ReadFiles framed by hand", () => {
  const piece = (index: number, offset: number, size: number, errno: number, last: boolean): PieceOut => ({
    index, offset: BigInt(offset), data: Buffer.from(Array.from({ length: size }, (_, i) => (i * 7 + index) & 255)), errno, last,
  });
  const messages: PieceOut[][] = [
    [],
    [piece(0, 0, 0, 0, false)],
    [piece(0, 0, 10, 0, true)],
    [piece(1, 0, 0, 2, true), piece(2, 0, 300, 0, true), piece(3, 2 ** 40 + 3, 16_384, 0, false)],
    [piece(127, 127, 127, 127, true), piece(128, 128, 128, 128, true), piece(2 ** 32 - 1, Number.MAX_SAFE_INTEGER, 131_072, 2 ** 32 - 1, false)],
  ];

  test("each message of pieces is framed byte for byte as Connect frames it, defaults left out", () => {
    for (const pieces of messages) {
      const body = toBinary(FilePiecesSchema, create(FilePiecesSchema, { pieces }));
      const head = Buffer.alloc(5);
      head.writeUInt32BE(body.length, 1);
      expect(Buffer.from(framePieces({ pieces })).equals(Buffer.concat([head, body]))).toBe(true);
    }
  });

  // HTTP/2 may still hold a message it was handed when the next one is framed.
  test("a message framed stays as it was once the next ones are framed", () => {
    const framed = messages.map((pieces) => framePieces({ pieces }));
    for (const [i, pieces] of messages.entries()) {
      const body = toBinary(FilePiecesSchema, create(FilePiecesSchema, { pieces }));
      const head = Buffer.alloc(5);
      head.writeUInt32BE(body.length, 1);
      expect(Buffer.from(framed[i]!).equals(Buffer.concat([head, body]))).toBe(true);
    }
  });
});

describe("ReadFiles read by hand", () => {
  const piece = (index: number, offset: number, size: number, errno: number, last: boolean): PieceOut => ({
    index, offset: BigInt(offset), data: Buffer.from(Array.from({ length: size }, (_, i) => (i * 7 + index + 1) & 255)), errno, last,
  });
  const plain = (pieces: PieceOut[]) => pieces.map((p) => ({ index: p.index, offset: Number(p.offset), data: Buffer.from(p.data), errno: p.errno, last: p.last }));
  const joined = (got: ReturnType<typeof piecesOf>) => got.map((p) => ({ ...p, data: Buffer.concat(p.data) }));
  const cutUp = (whole: Buffer, cut: number) => {
    const parts: Buffer[] = [];
    for (let at = 0; at < whole.length; at += cut) parts.push(whole.subarray(at, at + cut));
    return parts;
  };

  test("a message cut into pieces anywhere reads as the serializer's decoding, its data left in the pieces", () => {
    const messages: PieceOut[][] = [
      [],
      [piece(0, 0, 0, 0, false)],
      [piece(0, 0, 10, 0, true), piece(1, 0, 0, 2, true)],
      [piece(2, 0, 300, 0, true), piece(3, 2 ** 40 + 3, 16_384, 0, false), piece(3, 2 ** 40 + 16_387, 40_000, 0, true)],
      [piece(127, 127, 127, 127, true), piece(128, 128, 128, 128, true), piece(2 ** 32 - 1, Number.MAX_SAFE_INTEGER, 70_000, 2 ** 32 - 1, false)],
    ];
    for (const pieces of messages) {
      const whole = Buffer.from(framePieces({ pieces })).subarray(5);
      for (const cut of [1, 2, 7, 4096, 16_384, whole.length || 1]) {
        const parts = cutUp(whole, cut);
        const got = piecesOf(parts);
        expect(joined(got)).toEqual(plain(pieces));
        for (const p of got) expect(p.data.every((d) => d.buffer === whole.buffer)).toBe(true);
      }
    }
  });

  test("a message encoded otherwise (fields reordered, an unknown field, a repeated one) reads as the serializer decodes it; one whose lengths overrun, or with a data field that is not length-delimited, is refused", () => {
    const data = [...Buffer.from("some bytes")];
    const inner = (fields: number[]) => [0x0a, fields.length, ...fields];
    const cases = [
      inner([0x10, 5, 0x08, 2, 0x1a, data.length, ...data]),
      inner([0x08, 1, 0x1a, data.length, ...data, 0x28, 1, 0x30, 9]),
      inner([0x08, 1, 0x08, 4]),
    ];
    for (const bytes of cases) {
      const want = fromBinary(FilePiecesSchema, Buffer.from(bytes)).pieces.map((p) => ({ index: p.index, offset: Number(p.offset), data: Buffer.from(p.data), errno: p.errno, last: p.last }));
      expect(want.length).toBeGreaterThan(0);
      for (const cut of [1, 3, bytes.length]) expect(joined(piecesOf(cutUp(Buffer.from(bytes), cut)))).toEqual(want);
    }
    for (const bad of [[0x0a, 4, 0x1a, 9, 1, 2], [0x0a, 30, 0x08, 1], [...inner([0x08, 1]), ...inner([0x18, 1, 0x08, 3])]]) expect(() => piecesOf([Buffer.from(bad)])).toThrow();
  });
});

/**
 * A holder on a real HTTP/2 socket answering every call with answer(res); its session manager for a
 * reader, whether the last call's stream was closed (reset or ended), and stop().
 */
async function holder(answer: (res: http2.Http2ServerResponse) => void) {
  let closed = false;
  const server = http2.createServer((_req, res) => {
    res.on("error", () => {});
    res.on("close", () => (closed = true));
    res.writeHead(200, { "content-type": "application/grpc+proto" });
    answer(res);
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const sm = new Http2SessionManager(`http://127.0.0.1:${(server.address() as { port: number }).port}`, {}, { settings: { initialWindowSize: WINDOW } });
  return {
    sm,
    closed: () => closed,
    stop() {
      sm.abort();
      server.close();
    },
  };
}

/** chunk written to res again and again, as fast as flow control lets it, until its stream closes; sent counts each write. */
function flood(res: http2.Http2ServerResponse, chunk: Uint8Array, sent: (bytes: number) => void = () => {}): void {
  const more = () => {
    while (!res.stream.closed) {
      sent(chunk.length);
      if (!res.write(chunk)) return void res.once("drain", more);
    }
  };
  more();
}

const ask = create(ReadFilesRequestSchema, { files: [] });

describe("a hostile holder's reply", () => {
  test("sent without end: once the reader has what it wanted, the stream is reset, and the holder got no more than the windows' worth past it off its hands", async () => {
    const message = Buffer.from(framePieces({ pieces: [{ index: 0, offset: 0n, data: new Uint8Array(1 << 20).fill(7), errno: 0, last: false }] }));
    let sent = 0;
    const h = await holder((res) => flood(res, message, (n) => (sent += n)));
    try {
      let taken = 0;
      for await (const pieces of readFilesFrames(h.sm, ask, { headers: {}, timeoutMs: 10_000 })) {
        expect(pieces[0]!.data.reduce((n, d) => n + d.length, 0)).toBe(1 << 20);
        if (++taken === 3) break;
      }
      await waitFor("the holder's stream to be reset", h.closed);
      // Flow control held the rest: the reader's window, and a message or two in the holder's buffers.
      expect(sent).toBeLessThanOrEqual(3 * message.length + WINDOW + 4 * message.length);
    } finally {
      h.stop();
    }
  });

  test("stalled half-way: the call fails at its deadline, and its stream is reset", async () => {
    const h = await holder((res) => res.write(framePieces({ pieces: [{ index: 0, offset: 0n, data: new Uint8Array(1000), errno: 0, last: false }] })));
    try {
      let taken = 0;
      const read = (async () => {
        for await (const _ of readFilesFrames(h.sm, ask, { headers: {}, timeoutMs: 300 })) taken++;
      })();
      await expect(read).rejects.toMatchObject({ code: Code.DeadlineExceeded });
      expect(taken).toBe(1);
      await waitFor("the holder's stream to be reset", h.closed);
    } finally {
      h.stop();
    }
  });

  test("a message declared past the largest a holder sends, its bytes streamed: refused at its length, and the stream reset", async () => {
    const h = await holder((res) => {
      const head = Buffer.alloc(5);
      head.writeUInt32BE(1 << 30, 1);
      res.write(head);
      flood(res, Buffer.alloc(1 << 20));
    });
    try {
      const read = (async () => {
        for await (const _ of readFilesFrames(h.sm, ask, { headers: {}, timeoutMs: 10_000 }));
      })();
      await expect(read).rejects.toMatchObject({ code: Code.ResourceExhausted });
      await waitFor("the holder's stream to be reset", h.closed);
    } finally {
      h.stop();
    }
  });
});

describe("a call read off its HTTP/2 stream", () => {
  test("raises its connection's flow-control window to WINDOW, not only its streams': a holder is not held to 64 KiB in flight", async () => {
    const h = await holder((res) => {
      res.addTrailers({ "grpc-status": "0" });
      res.end();
    });
    const sm = h.sm;
    try {
      const before = await sm.request("POST", "/probe", {}, {});
      const session = before.session!;
      expect(session.state.effectiveLocalWindowSize).toBe(65_535);
      before.close();
      for await (const _ of readFilesFrames(sm, ask, { headers: {}, timeoutMs: 5000 }));
      const after = await sm.request("POST", "/probe", {}, {});
      expect(after.session).toBe(session);
      expect(session.state.effectiveLocalWindowSize).toBeGreaterThanOrEqual(WINDOW);
      after.close();
    } finally {
      h.stop();
    }
  });
});
