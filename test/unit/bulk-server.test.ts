import { afterEach, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { BulkSinkError, BulkUnreachable, BulkUnsupported, createBulkClient } from "../../src/peer/bulk-client.ts";
import { MAGIC, createAnswerReader, encodeRequest, frameHead, type AnswerPart } from "../../src/peer/bulk-protocol.ts";
import * as http2 from "node:http2";
import { serveBulk, type ThreadSends } from "../../src/peer/bulk-server.ts";
import type { OpenedFile } from "../../src/peer/peer-service.ts";
import { filePool } from "../../src/local/file-pool.ts";
import { E, FsError } from "../../src/util/errno.ts";
import { freePort, tempDir } from "../helpers/env.ts";
import { rawHolder } from "../helpers/bulk-holder.ts";

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
  const threads: ThreadSends = {
    async openFile() {
      const fd = fs.openSync(path, "r");
      let checks = 0;
      const f: OpenedFile = { fd, size: fs.fstatSync(fd).size, intact: () => o.intact?.(++checks) ?? true, served: () => {}, close: () => fs.closeSync(fd) };
      return f;
    },
    send: filePool().send,
    stream: () => filePool().stream("send"),
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
        threads,
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

describe("bulk lane: bytes sent by the send threads", () => {
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
    return { data, s, path };
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
    // The second frame's check fails: its bytes went before it (the send thread sends them without a check between).
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

  test("a write after the holder checked a frame never reaches the reader: the frame carries the bytes as they were before the check, though the reader takes them only later", async () => {
    const { data, s, path } = await setUp(256 << 10);
    const parts: AnswerPart[] = [];
    const read = createAnswerReader();
    const sock = net.connect(s.port, "127.0.0.1");
    sock.on("data", (d: Buffer) => parts.push(...read(d).parts));
    // Nothing taken off the connection until the answer has been checked and ended.
    sock.pause();
    sock.write(encodeRequest({ secret: SECRET, ...file, offset: 0, length: 0, held: true }));
    try {
      await until(() => s.answered.length === 1);
      expect(s.answered).toEqual([0]);
      const f = fs.openSync(path, "r+");
      fs.writeSync(f, Buffer.alloc(data.length, 0xee), 0, data.length, 0);
      fs.closeSync(f);
      sock.resume();
      await until(() => parts.some((p) => "end" in p || "errno" in p));
      expect(parts.at(-1)).toEqual({ end: true });
      const got = Buffer.concat(parts.flatMap((p) => ("data" in p ? [p.data] : [])));
      expect(got.length).toBe(data.length);
      expect(got.equals(data)).toBe(true);
      expect(s.throughJs).toBe(0);
    } finally {
      sock.destroy();
    }
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

  test("with every send thread taken, an answer goes through JS; with every receive thread taken, readInto reads nothing and says so", async () => {
    const { data, s } = await setUp(2 * MIB);
    const taken: (() => void)[] = [];
    for (let t; (t = filePool().stream("send")); ) taken.push(t);
    const client = createBulkClient({ secret: SECRET, timeoutMs: 10_000 });
    try {
      const out: Uint8Array[] = [];
      for await (const piece of client.read(s.address, file, 0, 0)) out.push(...piece.data);
      expect(Buffer.concat(out).equals(data)).toBe(true);
      expect(s.throughJs).toBe(1);
      for (const t of taken.splice(0)) t();
      for (let t; (t = filePool().stream("receive")); ) taken.push(t);
      let landed = 0;
      expect(await client.readInto(s.address, file, 0, 0, 2 * MIB, { fd: -1, landed: () => void landed++ })).toBe(false);
      expect(landed).toBe(0);
    } finally {
      for (const t of taken) t();
      client.close();
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

describe("bulk lane: bytes received by the file threads (readInto)", () => {
  const dirs: { remove(): void }[] = [];
  const closers: (() => Promise<void>)[] = [];
  afterEach(async () => {
    for (const c of closers.splice(0)) await c();
    for (const d of dirs.splice(0)) d.remove();
  });
  const file = { ino: 7, version: 9, path: "/f" };
  /** A sink file (zeros at first) and what landed in it. */
  function sinkFile(size: number) {
    const t = tempDir("bulk-into");
    dirs.push(t);
    const path = join(t.path, "copy");
    fs.writeFileSync(path, Buffer.alloc(size));
    const fd = fs.openSync(path, "r+");
    closers.push(async () => fs.closeSync(fd));
    const landed: [number, number][] = [];
    return { path, fd, landed, sink: { fd, landed: (at: number, n: number) => void landed.push([at, n]) } };
  }

  test.each([
    ["whole", 0, 0],
    ["a range from an offset", 1000, 2 * MIB + 7],
  ])("a file read %s lands at its offsets, each frame told once the next head came", async (_, offset, length) => {
    const size = 3 * MIB + 12_345;
    const t = tempDir("bulk-src");
    dirs.push(t);
    const data = Buffer.from(crypto.getRandomValues(new Uint8Array(size)));
    fs.writeFileSync(join(t.path, "f"), data);
    const s = await serve(join(t.path, "f"));
    closers.push(s.close);
    const into = sinkFile(size);
    const client = createBulkClient({ secret: SECRET, timeoutMs: 10_000 });
    const end = length ? offset + length : size;
    expect(await client.readInto(s.address, file, offset, length, end - offset, into.sink)).toBe(true);
    client.close();
    const got = fs.readFileSync(into.path);
    expect(got.subarray(offset, end).equals(data.subarray(offset, end))).toBe(true);
    // Consecutive frames from the offset, of at most 1 MiB each.
    let at = offset;
    for (const [from, n] of into.landed) {
      expect(from).toBe(at);
      expect(n).toBeLessThanOrEqual(MIB);
      at += n;
    }
    expect(at).toBe(end);
  });

  test("a frame the holder takes back (its failure's head after it) never lands; the reader gets the holder's errno", async () => {
    const frame = (n: number, b: number) => Buffer.concat([frameHead(n), Buffer.alloc(n, b)]);
    const srv = await rawHolder(() => Buffer.concat([MAGIC, frame(1000, 1), frame(500, 2), frameHead(-E.ESTALE)]));
    closers.push(srv.close);
    const into = sinkFile(4000);
    const client = createBulkClient({ secret: SECRET, timeoutMs: 10_000 });
    const err = await client.readInto(srv.address, file, 0, 0, 4000, into.sink).catch((e: unknown) => e);
    client.close();
    expect(err).toBeInstanceOf(FsError);
    expect((err as FsError).errno).toBe(E.ESTALE);
    expect(into.landed).toEqual([[0, 1000]]);
  });

  test("a holder that sends more than asked for: refused before the bytes past it are written (ESTALE: it holds another version)", async () => {
    const srv = await rawHolder(() => Buffer.concat([MAGIC, frameHead(3000), Buffer.alloc(3000, 7), frameHead(0)]));
    closers.push(srv.close);
    const into = sinkFile(4000);
    const client = createBulkClient({ secret: SECRET, timeoutMs: 10_000 });
    const err = await client.readInto(srv.address, file, 0, 0, 2000, into.sink).catch((e: unknown) => e);
    client.close();
    expect((err as FsError).errno).toBe(E.ESTALE);
    expect(into.landed).toEqual([]);
    expect(fs.readFileSync(into.path).equals(Buffer.alloc(4000))).toBe(true);
  });

  test("nobody listening: unreachable (ECONNREFUSED); an HTTP/2 server (an older node) or one that closes at once: unsupported; a silent one: ETIMEDOUT", async () => {
    const into = sinkFile(10);
    const client = createBulkClient({ secret: SECRET, timeoutMs: 300 });
    const attempt = (address: string) => client.readInto(address, file, 0, 0, 10, into.sink).catch((e: unknown) => e);
    const refused = await attempt(`127.0.0.1:${await freePort()}`);
    expect(refused).toBeInstanceOf(BulkUnreachable);
    expect((refused as BulkUnreachable).why).toBe("ECONNREFUSED");
    const h2 = http2.createServer();
    await new Promise<void>((res) => h2.listen(0, "127.0.0.1", () => res()));
    closers.push(() => new Promise<void>((res) => h2.close(() => res())));
    expect(await attempt(`127.0.0.1:${(h2.address() as AddressInfo).port}`)).toBeInstanceOf(BulkUnsupported);
    const closing = net.createServer((sock) => sock.destroy());
    await new Promise<void>((res) => closing.listen(0, "127.0.0.1", () => res()));
    closers.push(() => new Promise<void>((res) => closing.close(() => res())));
    expect(await attempt(`127.0.0.1:${(closing.address() as AddressInfo).port}`)).toBeInstanceOf(BulkUnsupported);
    const silent = await rawHolder(() => undefined);
    closers.push(silent.close);
    const timedOut = await attempt(silent.address);
    expect((timedOut as FsError).errno).toBe(E.ETIMEDOUT);
    client.close();
    expect(into.landed).toEqual([]);
  });

  test("a holder that trickles a frame times out with the frame's deadline, not at each byte; one cut mid-frame is a failure, not an older node", async () => {
    const sockets: net.Socket[] = [];
    const trickle = net.createServer((sock) => {
      sockets.push(sock);
      sock.on("error", () => {});
      sock.once("data", () => {
        sock.write(Buffer.concat([MAGIC, frameHead(1000)]));
        const drip = setInterval(() => (sock.destroyed ? clearInterval(drip) : sock.write(Buffer.alloc(1, 1))), 20);
        sock.once("close", () => clearInterval(drip));
      });
    });
    await new Promise<void>((res) => trickle.listen(0, "127.0.0.1", () => res()));
    closers.push(async () => {
      for (const x of sockets) x.destroy();
      await new Promise<void>((res) => trickle.close(() => res()));
    });
    const cut = net.createServer((sock) => {
      sock.on("error", () => {});
      sock.once("data", () => sock.end(Buffer.concat([MAGIC, frameHead(1000), Buffer.alloc(10)])));
    });
    await new Promise<void>((res) => cut.listen(0, "127.0.0.1", () => res()));
    closers.push(() => new Promise<void>((res) => cut.close(() => res())));
    const into = sinkFile(1000);
    const client = createBulkClient({ secret: SECRET, timeoutMs: 300 });
    const t0 = performance.now();
    const slow = await client.readInto(`127.0.0.1:${(trickle.address() as AddressInfo).port}`, file, 0, 0, 1000, into.sink).catch((e: unknown) => e);
    // A deadline per wait would have let 1000 bytes at one per 20 ms run 20 s.
    expect(performance.now() - t0).toBeLessThan(10_000);
    expect((slow as FsError).errno).toBe(E.ETIMEDOUT);
    // Cut after part of the first frame.
    const cutClient = createBulkClient({ secret: SECRET, timeoutMs: 10_000 });
    const broken = await cutClient.readInto(`127.0.0.1:${(cut.address() as AddressInfo).port}`, file, 0, 0, 1000, into.sink).catch((e: unknown) => e);
    client.close();
    cutClient.close();
    expect(broken).toBeInstanceOf(FsError);
    expect(broken).not.toBeInstanceOf(BulkUnsupported);
    expect(into.landed).toEqual([]);
  });

  test("a read given up (its signal aborted) mid-frame stops at once, not at the frame's deadline; nothing of the frame lands", async () => {
    let began!: () => void;
    const sent = new Promise<void>((res) => (began = res));
    // Half a frame, then nothing, the connection left open.
    const srv = await rawHolder(() => {
      setImmediate(began);
      return Buffer.concat([MAGIC, frameHead(1000), Buffer.alloc(500, 1)]);
    });
    closers.push(srv.close);
    const into = sinkFile(1000);
    const client = createBulkClient({ secret: SECRET, timeoutMs: 600_000 });
    const stop = new AbortController();
    const read = client.readInto(srv.address, file, 0, 0, 1000, into.sink, stop.signal).catch((e: unknown) => e);
    await sent;
    stop.abort();
    // Before the fix this waited out the 600 s deadline (the test's own timeout fails it first).
    const e = await read;
    client.close();
    expect(e).toBeInstanceOf(FsError);
    expect((e as FsError).message).toContain("given up");
    expect(into.landed).toEqual([]);
  }, 20_000);

  test("a write the reader's file refuses is the reader's failure (BulkSinkError), not the holder's", async () => {
    const srv = await rawHolder(() => Buffer.concat([MAGIC, frameHead(100), Buffer.alloc(100, 1), frameHead(0)]));
    closers.push(srv.close);
    const into = sinkFile(100);
    const readOnly = fs.openSync(into.path, "r");
    closers.push(async () => fs.closeSync(readOnly));
    const client = createBulkClient({ secret: SECRET, timeoutMs: 10_000 });
    const err = await client.readInto(srv.address, file, 0, 0, 100, { fd: readOnly, landed: into.sink.landed }).catch((e: unknown) => e);
    client.close();
    expect(err).toBeInstanceOf(BulkSinkError);
    expect((err as FsError).errno).toBe(E.EBADF);
    expect(into.landed).toEqual([]);
  });
});
