/**
 * The bulk lane: a file's bytes over a plain TCP connection of the peer port, beside HTTP/2 on the same
 * port (told apart by their first bytes). Bun's HTTP/2 sends 16 KiB frames and costs each side 2-4 ms of
 * CPU per MiB; a socket carries 1 MiB in 2 ms here, both sides together spending 2 ms of CPU.
 *
 * A request: MAGIC, its header's length (u32 LE, at most HEADER_MAX), the header as JSON (BulkRequest).
 * The answer: MAGIC again (an older node's HTTP/2 server answers with frames of its own, never taken
 * for bytes of a file), then frames of an i32 LE n: n > 0, n bytes of the file follow (consecutive
 * from the offset asked for); 0, the end; n < 0, the read failed with errno -n, the end. Requests on
 * one connection go one after another, each once the one before has ended.
 *
 * A frame's bytes count once the head after it has come (held): a holder may send them from the file
 * on a thread and check only then that no write changed them before they were read, a failure's head
 * then taking them back. A reader that asks with held takes them so; a holder sends so only to such
 * a reader.
 */

export const MAGIC = Buffer.from("MCFB");
/**
 * Answers of fewer bytes go through JS at both ends: in one write with their end, over a connection
 * kept from the last read, where the file threads would take a new connection and a turn per frame.
 */
export const THREADED_MIN = 256 << 10;
/** The HTTP/2 connection preface starts so (RFC 9113 3.4). */
export const H2_PREFACE = Buffer.from("PRI ");
/** A header is a path of at most 4 KiB with a few numbers and the secret: this leaves room, and bounds what an unknown caller makes a node hold. */
export const HEADER_MAX = 16 << 10;

export interface BulkRequest {
  /** The cluster secret (as gRPC callers send it in authorization). */
  secret?: string;
  ino: number;
  version: number;
  path: string;
  offset: number;
  /** 0: to the end. */
  length: number;
  /** The reader takes a frame's bytes only once the next head has come (see above). */
  held?: boolean;
}

export function encodeRequest(r: BulkRequest): Buffer {
  const json = Buffer.from(JSON.stringify(r));
  const head = Buffer.allocUnsafe(8);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(json.length, 4);
  return Buffer.concat([head, json]);
}

/** What a request's bytes say: the request and how many bytes it took, how many it needs in all, or why it is refused. */
export type Parsed = { request: BulkRequest; used: number } | { need: number } | { refused: string };

export function parseRequest(b: Buffer): Parsed {
  if (b.length < 8) return b.subarray(0, 4).equals(MAGIC.subarray(0, Math.min(4, b.length))) ? { need: 8 } : { refused: "not a bulk request" };
  if (!b.subarray(0, 4).equals(MAGIC)) return { refused: "not a bulk request" };
  const n = b.readUInt32LE(4);
  if (n > HEADER_MAX) return { refused: `a request header of ${n} bytes (at most ${HEADER_MAX})` };
  if (b.length < 8 + n) return { need: 8 + n };
  let v: unknown;
  try {
    v = JSON.parse(b.subarray(8, 8 + n).toString("utf8"));
  } catch {
    return { refused: "a request header that is not JSON" };
  }
  const r = v as Partial<BulkRequest>;
  const count = (x: unknown) => typeof x === "number" && Number.isSafeInteger(x) && x >= 0;
  if (typeof v !== "object" || v === null || !count(r.ino) || !count(r.version) || !count(r.offset) || !count(r.length) || typeof r.path !== "string" || (r.secret !== undefined && typeof r.secret !== "string") || (r.held !== undefined && typeof r.held !== "boolean")) {
    return { refused: "a request header without ino, version, path, offset and length" };
  }
  return { request: r as BulkRequest, used: 8 + n };
}

/** The frame heading n bytes of data (n > 0), the end (0), or a failure (-errno). */
export function frameHead(n: number): Buffer {
  const b = Buffer.allocUnsafe(4);
  b.writeInt32LE(n, 0);
  return b;
}

/** An answer read off a connection in whatever pieces it arrives: frames of data (each begun by frame), then the end or an errno; foreign: it is no bulk answer. */
export type AnswerPart = { frame: true } | { data: Buffer } | { end: true } | { errno: number } | { foreign: true };

/** Takes the bytes of one answer as they arrive; returns what they complete, and the bytes past the answer's end (the connection's next answer: none expected). */
export function createAnswerReader(): (chunk: Buffer) => { parts: AnswerPart[]; rest?: Buffer } {
  let left = 0;
  let head: Buffer = Buffer.alloc(0);
  let magic = 0;
  return (chunk) => {
    const parts: AnswerPart[] = [];
    let at = 0;
    for (; magic < 4 && at < chunk.length; magic++, at++) if (chunk[at] !== MAGIC[magic]) return { parts: [{ foreign: true }] };
    while (at < chunk.length) {
      if (left > 0) {
        const n = Math.min(left, chunk.length - at);
        parts.push({ data: chunk.subarray(at, at + n) });
        left -= n;
        at += n;
        continue;
      }
      const take = Math.min(4 - head.length, chunk.length - at);
      head = Buffer.concat([head, chunk.subarray(at, at + take)]);
      at += take;
      if (head.length < 4) break;
      const n = head.readInt32LE(0);
      head = Buffer.alloc(0);
      if (n > 0) {
        left = n;
        parts.push({ frame: true });
      } else {
        parts.push(n === 0 ? { end: true } : { errno: -n });
        return at < chunk.length ? { parts, rest: chunk.subarray(at) } : { parts };
      }
    }
    return { parts };
  };
}
