import { describe, expect, test } from "bun:test";
import * as http2 from "node:http2";
import type { AddressInfo } from "node:net";
import { HEADER_MAX, MAGIC, createAnswerReader, encodeRequest, frameHead, parseRequest, type AnswerPart } from "../../src/peer/bulk-protocol.ts";
import { BulkUnreachable, BulkUnsupported, createBulkClient } from "../../src/peer/bulk-client.ts";
import { freePort } from "../helpers/env.ts";
import { rawHolder } from "../helpers/bulk-holder.ts";

const req = { secret: "s3cret", ino: 42, version: 123456789, path: "/d/f", offset: 8, length: 0 };

describe("bulk lane protocol", () => {
  test("a request reads back as sent, from any prefix on: more bytes needed until it is whole", () => {
    const b = Buffer.concat([encodeRequest(req), Buffer.from("next")]);
    // The bytes it needs in all: its length and magic first, then its whole header.
    for (let n = 0; n < b.length - 4; n++) expect(parseRequest(b.subarray(0, n))).toEqual({ need: n < 8 ? 8 : b.length - 4 });
    expect(parseRequest(b)).toEqual({ request: req, used: b.length - 4 });
  });

  test.each([
    ["another protocol's first bytes", Buffer.from("GET / HTTP/1.1\r\n")],
    ["a header longer than the limit, refused before it arrives", Buffer.concat([Buffer.from("MCFB"), Buffer.from([0xff, 0xff, 0xff, 0x7f])])],
    ["a header that is not JSON", (() => { const j = Buffer.from("{nope"); const h = Buffer.from("MCFB\0\0\0\0"); h.writeUInt32LE(j.length, 4); return Buffer.concat([h, j]); })()],
    ["a negative offset", encodeRequest({ ...req, offset: -1 })],
    ["an inode past 2^53", Buffer.from(encodeRequest(req).toString("latin1").replace('"ino":42', '"ino":9007199254740993'), "latin1")],
    ["no path", (() => { const j = Buffer.from(JSON.stringify({ ino: 1, version: 1, offset: 0, length: 0 })); const h = Buffer.from("MCFB\0\0\0\0"); h.writeUInt32LE(j.length, 4); return Buffer.concat([h, j]); })()],
  ])("refused: %s", (_, b) => {
    expect(parseRequest(b)).toMatchObject({ refused: expect.any(String) });
  });

  test("the limit leaves room for a 4 KiB path and the secret", () => {
    const r = { ...req, path: "/" + "x".repeat(4095), secret: "y".repeat(1024) };
    expect(encodeRequest(r).length).toBeLessThan(HEADER_MAX);
  });

  test("an answer read in pieces split anywhere gives the same bytes and its end; an errno frame ends it too", () => {
    const data = Buffer.from(Array.from({ length: 300 }, (_, i) => i & 255));
    const answer = Buffer.concat([Buffer.from("MCFB"), frameHead(100), data.subarray(0, 100), frameHead(200), data.subarray(100), frameHead(0)]);
    for (const step of [1, 3, 4, 7, 101, answer.length]) {
      const read = createAnswerReader();
      const parts: AnswerPart[] = [];
      for (let at = 0; at < answer.length; at += step) {
        const r = read(answer.subarray(at, at + step));
        expect(r.rest).toBeUndefined();
        parts.push(...r.parts);
      }
      expect(Buffer.concat(parts.flatMap((p) => ("data" in p ? [p.data] : [])))).toEqual(data);
      expect(parts.at(-1)).toEqual({ end: true });
    }
    const read = createAnswerReader();
    expect(read(Buffer.concat([Buffer.from("MCFB"), frameHead(2), Buffer.from("ab"), frameHead(-116), Buffer.from("z")]))).toEqual({ parts: [{ frame: true }, { data: Buffer.from("ab") }, { errno: 116 }], rest: Buffer.from("z") });
    // What an HTTP/2 server sends first (a SETTINGS frame) is never taken for bytes.
    expect(createAnswerReader()(Buffer.from([0, 0, 6, 4, 0, 0, 0, 0, 0]))).toEqual({ parts: [{ foreign: true }] });
    const split = createAnswerReader();
    expect(split(Buffer.from("MC"))).toEqual({ parts: [] });
    expect(split(Buffer.from("X"))).toEqual({ parts: [{ foreign: true }] });
  });

  test("the client reuses a connection for the next read; one the holder closed meanwhile (its restart) is read again on a new one, not taken for an older node", async () => {
    // The second request on a connection finds the holder gone.
    const holder = await rawHolder((_, nth) => (nth ? "close" : Buffer.concat([MAGIC, frameHead(3), Buffer.from("abc"), frameHead(0)])));
    const client = createBulkClient({ timeoutMs: 5000 });
    const address = holder.address;
    const whole = async () => {
      const out: Uint8Array[] = [];
      for await (const ch of client.read(address, { ino: 1, version: 1, path: "/f" }, 0, 0)) out.push(...ch.data);
      return Buffer.concat(out).toString();
    };
    try {
      expect(await whole()).toBe("abc");
      expect(await whole()).toBe("abc");
      expect(await whole()).toBe("abc");
      // The first connection, the one its second read found closed, and the one that read again.
      expect(holder.connections()).toBe(3);
    } finally {
      client.close();
      await holder.close();
    }
  });

  test("the client: a port nobody listens on is unreachable (ECONNREFUSED); a server that answers no bulk request (an older node's HTTP/2) is told apart, nothing read", async () => {
    const client = createBulkClient({ timeoutMs: 5000 });
    const nobody = `127.0.0.1:${await freePort()}`;
    const first = async (address: string) => {
      try {
        for await (const _ of client.read(address, { ino: 1, version: 1, path: "/f" }, 0, 0)) return "data";
        return "end";
      } catch (e) {
        return e;
      }
    };
    const refused = await first(nobody);
    expect(refused).toBeInstanceOf(BulkUnreachable);
    expect((refused as BulkUnreachable).why).toBe("ECONNREFUSED");
    const h2 = http2.createServer();
    await new Promise<void>((res) => h2.listen(0, "127.0.0.1", () => res()));
    try {
      expect(await first(`127.0.0.1:${(h2.address() as AddressInfo).port}`)).toBeInstanceOf(BulkUnsupported);
    } finally {
      client.close();
      await new Promise<void>((res) => h2.close(() => res()));
    }
  });
});
