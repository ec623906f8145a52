import { afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { createBulkClient } from "../../src/peer/bulk-client.ts";
import { createAnswerReader, encodeRequest, type AnswerPart } from "../../src/peer/bulk-protocol.ts";
import { serveBulk, type KernelSends } from "../../src/peer/bulk-server.ts";
import type { OpenedFile } from "../../src/peer/peer-service.ts";
import { filePool } from "../../src/local/file-pool.ts";
import { E, FsError } from "../../src/util/errno.ts";
import { tempDir } from "../helpers/env.ts";

const MIB = 1 << 20;
const SECRET = "s3cret";

/** Resolves once check holds, polling the event loop (no fixed wait). */
async function until(check: () => boolean): Promise<void> {
  while (!check()) await new Promise((r) => setTimeout(r, 5));
}

const openFds = () => fs.readdirSync("/proc/self/fd").length;

interface Served {
  address: string;
  port: number;
  /** Answers ended: their errno (0: whole). */
  answered: number[];
  /** Answers served through JS (readFile). */
  throughJs: number;
  close(): Promise<void>;
}

/** A bulk server in this process on a real socket, serving path's bytes; intact: the check each sent frame must pass. */
async function serve(path: string, o: { intact?: (sent: number) => boolean; idleMs?: number } = {}): Promise<Served> {
  const s: Served = { address: "", port: 0, answered: [], throughJs: 0, close: async () => {} };
  const kernel: KernelSends = {
    async openFile() {
      const fd = fs.openSync(path, "r");
      let checks = 0;
      const f: OpenedFile = { fd, size: fs.fstatSync(fd).size, intact: () => o.intact?.(++checks) ?? true, served: () => {}, close: () => fs.closeSync(fd) };
      return f;
    },
    send: filePool().send,
    idleMs: o.idleMs ?? 10_000,
  };
  const sockets = new Set<net.Socket>();
  const server = net.createServer((sock) => {
    sockets.add(sock);
    sock.on("error", () => {});
    sock.once("data", (head: Buffer) => {
      serveBulk(sock, head, {
        secret: SECRET,
        async *readFile() {
          s.throughJs++;
          yield { data: new Uint8Array(fs.readFileSync(path)) };
        },
        kernel,
        proven: () => {},
        refused: () => {},
        observe: (errno) => void s.answered.push(errno),
      });
    });
  });
  await new Promise<void>((res) => server.listen(0, "127.0.0.1", () => res()));
  s.port = (server.address() as AddressInfo).port;
  s.address = `127.0.0.1:${s.port}`;
  s.close = async () => {
    for (const sock of sockets) sock.destroy();
    await new Promise<void>((res) => server.close(() => res()));
  };
  return s;
}

describe("bulk lane: bytes sent by the kernel", () => {
  const dirs: { remove(): void }[] = [];
  const served: Served[] = [];
  afterEach(async () => {
    for (const s of served.splice(0)) await s.close();
    for (const d of dirs.splice(0)) d.remove();
  });
  async function setUp(bytes: number, o?: Parameters<typeof serve>[1]) {
    const t = tempDir("bulk-server");
    dirs.push(t);
    const path = join(t.path, "f");
    const data = Buffer.from(crypto.getRandomValues(new Uint8Array(bytes)));
    fs.writeFileSync(path, data);
    const s = await serve(path, o);
    served.push(s);
    return { data, s };
  }
  const file = { ino: 7, version: 9, path: "/f" };

  test.each([
    ["a file of frames and a part", 3 * MIB + 12_345, 0, 0],
    ["a range of it, from an offset", 3 * MIB + 12_345, 1000, 2 * MIB + 7],
    ["a range past its end: to its end", 3 * MIB, MIB, 8 * MIB],
  ])("%s arrives whole, and the connection carries the next read", async (_, size, offset, length) => {
    const { data, s } = await setUp(size);
    const client = createBulkClient({ secret: SECRET, timeoutMs: 10_000 });
    try {
      for (let round = 0; round < 2; round++) {
        const out: Uint8Array[] = [];
        let at = offset;
        for await (const piece of client.read(s.address, file, offset, length)) {
          expect(piece.offset).toBe(at);
          for (const d of piece.data) at += d.length;
          out.push(...piece.data);
        }
        expect(Buffer.concat(out).equals(data.subarray(offset, length ? Math.min(size, offset + length) : size))).toBe(true);
      }
      // Told once the end's send is back, which may be after the reader has it.
      await until(() => s.answered.length === 2);
      expect(s.answered).toEqual([0, 0]);
      expect(s.throughJs).toBe(0);
    } finally {
      client.close();
    }
  });

  test("a frame found changed once it went is never taken: the reader has the frames checked before it, then ESTALE", async () => {
    // The second frame's check fails: its bytes went before it (the kernel sends them straight from the file).
    const { data, s } = await setUp(4 * MIB, { intact: (n) => n < 2 });
    const client = createBulkClient({ secret: SECRET, timeoutMs: 10_000 });
    const out: Uint8Array[] = [];
    let failed: unknown;
    try {
      for await (const piece of client.read(s.address, file, 0, 0)) out.push(...piece.data);
    } catch (e) {
      failed = e;
    } finally {
      client.close();
    }
    expect(failed).toBeInstanceOf(FsError);
    expect((failed as FsError).errno).toBe(E.ESTALE);
    expect(Buffer.concat(out).equals(data.subarray(0, MIB))).toBe(true);
    await until(() => s.answered.length === 1);
    expect(s.answered).toEqual([E.ESTALE]);
  });

  test("a reader that does not hold frames (an older node) is answered through JS, each frame checked before it goes", async () => {
    const { data, s } = await setUp(2 * MIB);
    const parts: AnswerPart[] = [];
    const read = createAnswerReader();
    const sock = net.connect(s.port, "127.0.0.1");
    sock.on("data", (d: Buffer) => parts.push(...read(d).parts));
    sock.write(encodeRequest({ secret: SECRET, ...file, offset: 0, length: 0 }));
    try {
      await until(() => parts.some((p) => "end" in p || "errno" in p));
      expect(Buffer.concat(parts.flatMap((p) => ("data" in p ? [p.data] : []))).equals(data)).toBe(true);
      expect(s.throughJs).toBe(1);
    } finally {
      sock.destroy();
    }
  });

  test("a reader that goes mid-answer: the send ends, its file and its copy of the connection closed", async () => {
    const { s } = await setUp(64 * MIB);
    // The pool's threads and the server's sockets are up: what is open after the first answer is the baseline.
    const client = createBulkClient({ secret: SECRET, timeoutMs: 10_000 });
    for await (const _ of client.read(s.address, file, 0, MIB)) void _;
    client.close();
    await until(() => s.answered.length === 1);
    const before = openFds();
    const sock = net.connect(s.port, "127.0.0.1");
    let got = 0;
    sock.on("error", () => {});
    sock.on("data", (d: Buffer) => {
      got += d.length;
      if (got > 2 * MIB) sock.destroy();
    });
    sock.write(encodeRequest({ secret: SECRET, ...file, offset: 0, length: 0, held: true }));
    await until(() => s.answered.length === 2);
    expect(s.answered[1]).not.toBe(0);
    await until(() => openFds() <= before);
  });

  test("a reader that takes nothing: the send gives up after the idle timeout and closes the connection", async () => {
    const { s } = await setUp(64 * MIB, { idleMs: 300 });
    const sock = net.connect(s.port, "127.0.0.1");
    let closed = false;
    sock.on("error", () => {});
    sock.on("close", () => (closed = true));
    sock.pause();
    sock.write(encodeRequest({ secret: SECRET, ...file, offset: 0, length: 0, held: true }));
    try {
      await until(() => s.answered.length === 1);
      expect(s.answered).toEqual([E.ETIMEDOUT]);
      sock.resume();
      await until(() => closed);
    } finally {
      sock.destroy();
    }
  });
});
