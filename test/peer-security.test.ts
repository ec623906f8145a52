import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { spawn } from "bun";
import pino from "pino";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Peer } from "../src/gen/mcfs/v1/peer_pb.ts";
import { MCFS, fuseUnavailable, tempDir, waitFor } from "./helpers/env.ts";
import { startDaemon, type TestDaemon } from "./helpers/daemon.ts";
import { startRedis, type TestRedis } from "./helpers/redis.ts";
import { useCluster } from "./helpers/node.ts";
import { floodCall, listeningAddresses, rssBytes } from "./helpers/flood.ts";
import { makeCa, makeCert, opensslUnavailable, type CertFiles } from "./helpers/certs.ts";
import { startTlsRedis, type TlsRedis } from "./helpers/redis-tls.ts";
import { startPeerServer } from "../src/peer/peer-server.ts";
import { call, createPeerPool } from "../src/peer/peer-client.ts";
import { openLocalDir } from "../src/local/local-dir.ts";
import { createAnswerReader, encodeRequest, type BulkRequest } from "../src/peer/bulk-protocol.ts";
import { E } from "../src/util/errno.ts";

const skip = fuseUnavailable();
const SECRET = "test-cluster-secret-0123456789";
const MIB = 1 << 20;

/** The Connect code a call failed with ("OK" if it succeeded). Bun's expect().rejects stalls HTTP/2 I/O. */
/**
 * A read that the service itself answers, and refuses (InvalidArgument: it names no inode): a call
 * that gets this far got past the transport's checks.
 */
const served = (path: string) => ({ path, ino: 0n, version: 0n, offset: 0n, length: 0n });
const SERVED = "InvalidArgument";

async function codeOf(p: () => Promise<unknown>): Promise<string> {
  try {
    await p();
    return "OK";
  } catch (e) {
    return Code[ConnectError.from(e).code]!;
  }
}

/** A bare Connect client of a node's peer port (no pool, no errno mapping). */
function peerClient(address: string, secret?: string, nodeOptions: object = {}, scheme = "http") {
  return createClient(Peer, createGrpcTransport({
    baseUrl: `${scheme}://${address}`,
    defaultTimeoutMs: 20_000,
    nodeOptions,
    interceptors: [(next) => (req) => (secret && req.header.set("authorization", `Bearer ${secret}`), next(req))],
  }));
}

/** Run `mcfs daemon` with these flags and expect it to refuse to start: resolves with its stderr. */
async function refusedStart(args: string[]): Promise<{ code: number; err: string }> {
  const p = spawn([MCFS, "daemon", ...args], { stdout: "ignore", stderr: "pipe" });
  const err = await new Response(p.stderr).text();
  return { code: await p.exited, err };
}

describe.skipIf(!!skip)("peer port under a flood", () => {
  const cluster = useCluster("flood", ["a"]);
  let a: TestDaemon;
  beforeAll(() => {
    a = cluster.nodes[0]!;
    fs.writeFileSync(join(a.mnt, "still-here.txt"), "still here");
  });
  const mountAnswers = () => {
    expect(fs.statSync(join(a.mnt, "still-here.txt")).size).toBe(10);
    expect(fs.readFileSync(join(a.mnt, "still-here.txt"), "utf8")).toBe("still here");
  };

  test("four unauthenticated 512 MiB requests: refused Unauthenticated unread, RSS stays within 100 MiB, the mount answers", async () => {
    const before = rssBytes(a.proc.pid);
    for (let i = 0; i < 4; i++) {
      const headers: Record<string, string> = i % 2 ? { authorization: "Bearer wrong-secret-wrong-secret" } : {};
      const r = await floodCall(`http://127.0.0.1:${a.port}`, 512 * MIB, headers);
      expect(r.grpcStatus).toBe(Code.Unauthenticated);
      // The server reset the stream instead of reading it: far less than the body went out.
      expect(r.written).toBeLessThan(64 * MIB);
      mountAnswers();
    }
    const after = rssBytes(a.proc.pid);
    console.log(`daemon RSS before ${(before / MIB).toFixed(1)} MiB, after 4 x 512 MiB unauthenticated: ${(after / MIB).toFixed(1)} MiB`);
    expect(after - before).toBeLessThan(100 * MIB);
  });

  test("an authenticated 512 MiB message gets ResourceExhausted unread; RSS stays within 100 MiB", async () => {
    const before = rssBytes(a.proc.pid);
    for (let i = 0; i < 2; i++) {
      const r = await floodCall(`http://127.0.0.1:${a.port}`, 512 * MIB, { authorization: `Bearer ${SECRET}` });
      expect(r.grpcStatus).toBe(Code.ResourceExhausted);
      mountAnswers();
    }
    const after = rssBytes(a.proc.pid);
    console.log(`daemon RSS before ${(before / MIB).toFixed(1)} MiB, after 2 x 512 MiB authenticated: ${(after / MIB).toFixed(1)} MiB`);
    expect(after - before).toBeLessThan(100 * MIB);
  });

  test("an authenticated request over the 4 MiB limit is ResourceExhausted; a batch of 512 refs with 4 KiB paths still passes", async () => {
    const c = peerClient(`127.0.0.1:${a.port}`, SECRET);
    const long = "/" + "d".repeat(4095);
    const refs = (n: number) => Array.from({ length: n }, () => ({ path: long, ino: 0n, version: 0n }));
    expect(await codeOf(async () => {
      for await (const _ of c.readFiles({ files: refs(1100) }));
    })).toBe("ResourceExhausted");
    let pieces = 0;
    for await (const m of c.readFiles({ files: refs(512) })) pieces += m.pieces.length;
    expect(pieces).toBe(512);
    mountAnswers();
  });

  test("readers that go away mid-batch leave no file open on the holder (it opens files ahead of the stream), and the next batch comes whole", async () => {
    fs.mkdirSync(join(a.mnt, "batch"));
    const body = (i: number) => Buffer.alloc(100_000 + i, i + 1);
    const files: { path: string; ino: bigint; version: bigint }[] = [];
    for (let i = 0; i < 48; i++) {
      const p = join(a.mnt, "batch", `f${i}`);
      fs.writeFileSync(p, body(i));
      const ino = BigInt(fs.statSync(p).ino);
      files.push({ path: `/batch/f${i}`, ino, version: BigInt((await cluster.redis.cli("HGET", `mcfs:i:${ino}`, "v")).trim()) });
    }
    const c = peerClient(`127.0.0.1:${a.port}`, SECRET);
    const whole = async () => {
      const got = files.map(() => [] as Buffer[]);
      for await (const m of c.readFiles({ files })) {
        for (const p of m.pieces) {
          expect(p.errno).toBe(0);
          got[p.index]!.push(Buffer.from(p.data));
        }
      }
      for (const [i, parts] of got.entries()) expect(Buffer.concat(parts).equals(body(i))).toBe(true);
    };
    // Its connection is open from here on: only what the calls open is counted.
    await whole();
    const fds = () => fs.readdirSync(`/proc/${a.proc.pid}/fd`).length;
    const before = fds();
    for (let round = 0; round < 5; round++) {
      const stop = new AbortController();
      expect(await codeOf(async () => {
        for await (const _ of c.readFiles({ files }, { signal: stop.signal })) stop.abort();
      })).toBe("Canceled");
    }
    await waitFor("the holder closing what it opened for the abandoned batches", () => fds() <= before);
    await whole();
    mountAnswers();
  });

  test("connections that send nothing cannot keep members out: over 64 from one address the oldest idle ones go, and every idle one is closed within seconds", async () => {
    let closedByServer = 0;
    const socks = Array.from({ length: 72 }, () => {
      const s = net.connect(a.port, "127.0.0.1");
      s.on("error", () => {});
      s.on("close", () => closedByServer++);
      return s;
    });
    await waitFor("the connections over the limit closed", () => closedByServer >= 8);
    // While the idle ones are still open, a member is served: an idle one makes room for it.
    expect(await codeOf(() => peerClient(`127.0.0.1:${a.port}`, SECRET).read(served("/still-here.txt")))).toBe(SERVED);
    await waitFor("every idle connection closed by the server", () => closedByServer === socks.length, 30_000);
    expect(a.log()).toContain("no member's call within");
  });
});

/** One exchange on a fresh connection to the bulk lane: the answer's parts until its end or errno (untilClose: until the server closes). */
function bulkExchange(port: number, bytes: Buffer, untilClose = false, piece = bytes.length): Promise<{ data: Buffer; end?: true; errno?: number; foreign?: true; closed: boolean }> {
  return new Promise((res) => {
    const s = net.connect(port, "127.0.0.1", async () => {
      s.setNoDelay(true);
      // In pieces of this many bytes, each sent on its own.
      for (let at = 0; at < bytes.length; at += piece) await new Promise<void>((sent) => s.write(bytes.subarray(at, at + piece), () => sent()));
    });
    const read = createAnswerReader();
    const data: Buffer[] = [];
    const out: { end?: true; errno?: number; foreign?: true } = {};
    const finish = (closed: boolean) => {
      s.destroy();
      res({ data: Buffer.concat(data), ...out, closed });
    };
    s.on("error", () => {});
    s.on("close", () => finish(true));
    s.on("data", (chunk: Buffer) => {
      for (const p of read(chunk).parts) {
        if ("data" in p) data.push(p.data);
        else if ("frame" in p) continue;
        else if ("end" in p) out.end = true;
        else if ("errno" in p) out.errno = p.errno;
        else out.foreign = true;
      }
      if (!untilClose && (out.end || out.foreign || out.errno !== undefined)) finish(false);
    });
  });
}

describe.skipIf(!!skip)("the bulk lane on the peer port", () => {
  const cluster = useCluster("bulk", ["a"]);
  const bytes = randomBytes(300_000);
  let a: TestDaemon;
  let file: { ino: number; version: number; path: string };
  beforeAll(async () => {
    a = cluster.nodes[0]!;
    fs.writeFileSync(join(a.mnt, "held.bin"), bytes);
    const ino = fs.statSync(join(a.mnt, "held.bin")).ino;
    file = { ino, version: Number(await cluster.redis.cli("HGET", `mcfs:i:${ino}`, "v")), path: "/held.bin" };
  });
  const ask = (over: Partial<BulkRequest>) => bulkExchange(a.port, encodeRequest({ secret: SECRET, ...file, offset: 0, length: 0, ...over }));

  test("a member gets the file's bytes, whole or a range; no secret or a wrong one gets EACCES and a closed connection, nothing read", async () => {
    expect(await ask({})).toEqual({ data: bytes, end: true, closed: false });
    expect(await ask({ offset: 1000, length: 5000 })).toEqual({ data: bytes.subarray(1000, 6000), end: true, closed: false });
    // A reader that holds each frame until the next head is sent the file by a send thread (all but the range, under 256 KiB).
    expect(await ask({ held: true })).toEqual({ data: bytes, end: true, closed: false });
    expect(await ask({ held: true, offset: 1000 })).toEqual({ data: bytes.subarray(1000), end: true, closed: false });
    expect(await ask({ held: true, offset: 1000, length: 5000 })).toEqual({ data: bytes.subarray(1000, 6000), end: true, closed: false });
    // A request arriving a few bytes at a time is answered the same.
    expect(await bulkExchange(a.port, encodeRequest({ secret: SECRET, ...file, offset: 0, length: 0 }), false, 3)).toEqual({ data: bytes, end: true, closed: false });
    for (const secret of [undefined, "wrong-secret-wrong-secret-0123", SECRET + "x"]) {
      const r = await bulkExchange(a.port, encodeRequest({ ...(secret === undefined ? {} : { secret }), ...file, offset: 0, length: 0 }), true);
      expect(r).toEqual({ data: Buffer.alloc(0), errno: E.EACCES, closed: true });
    }
    expect(a.log()).toContain("missing or wrong cluster secret");
  });

  test("what a member may not read over gRPC it may not read here: paths out of the root or into mcfs's state, a version not held", async () => {
    for (const path of ["/../../../etc/passwd", "/.mcfs/node-id", "relative/held.bin"]) {
      const r = await ask({ path, held: true });
      expect({ path, errno: r.errno, data: r.data.length }).toEqual({ path, errno: E.EACCES, data: 0 });
    }
    for (const held of [false, true]) {
      const r = await ask({ version: file.version + 1, held });
      expect({ errno: r.errno, data: r.data.length }).toEqual({ errno: E.ESTALE, data: 0 });
    }
  });

  test("bytes of neither protocol, a header over the limit or one that is not a request close the connection; the node serves on", async () => {
    const closes = [
      Buffer.from("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
      Buffer.concat([Buffer.from("MCFB"), Buffer.from([0xff, 0xff, 0xff, 0x7f]), Buffer.alloc(1024)]),
      (() => {
        const j = Buffer.from(JSON.stringify({ secret: SECRET, path: "/held.bin" }));
        const h = Buffer.from("MCFB\0\0\0\0");
        h.writeUInt32LE(j.length, 4);
        return Buffer.concat([h, j]);
      })(),
    ];
    for (const b of closes) expect(await bulkExchange(a.port, b, true)).toEqual({ data: Buffer.alloc(0), closed: true });
    expect(await ask({})).toEqual({ data: bytes, end: true, closed: false });
    expect(fs.readFileSync(join(a.mnt, "held.bin")).equals(bytes)).toBe(true);
  });
});

/** Whether a TCP connection to host:port is accepted. */
function connects(host: string, port: number): Promise<boolean> {
  return new Promise((res) => {
    const s = net.connect(port, host, () => (s.destroy(), res(true)));
    s.on("error", () => res(false));
  });
}

/** The metrics port a daemon started with --metrics-port 0 picked, from its log (it starts after the mount). */
async function metricsPort(d: TestDaemon): Promise<number> {
  const found = () => /"port":(\d+),"msg":"serving metrics at \/metrics"/.exec(d.log());
  await waitFor("the metrics server", () => found() !== null);
  return Number(found()![1]);
}

describe.skipIf(!!skip)("listening only where asked", () => {
  const cluster = useCluster("listen", ["a"], { a: ["--metrics-port", "0"] });

  test("with -i 127.0.0.1 the peer and metrics ports listen on 127.0.0.1 only: 127.0.0.2 is refused", async () => {
    const a = cluster.nodes[0]!;
    const mport = await metricsPort(a);
    expect(listeningAddresses(a.port)).toEqual(["127.0.0.1"]);
    expect(listeningAddresses(mport)).toEqual(["127.0.0.1"]);
    expect(await connects("127.0.0.1", a.port)).toBe(true);
    expect(await connects("127.0.0.1", mport)).toBe(true);
    // 127.0.0.0/8 is all loopback: reachable whenever something listens on it or on 0.0.0.0.
    expect(await connects("127.0.0.2", a.port)).toBe(false);
    expect(await connects("127.0.0.2", mport)).toBe(false);
  });

  test("--listen binds another address than the one dialed (-i); the dialed one is what Redis records", async () => {
    const b = await startDaemon({ base: cluster.base, name: "b", redisUrl: cluster.redis.url, args: ["-i", "10.255.255.1", "--listen", "127.0.0.2", "--metrics-port", "0"] });
    try {
      expect(listeningAddresses(b.port)).toEqual(["127.0.0.2"]);
      expect(listeningAddresses(await metricsPort(b))).toEqual(["127.0.0.2"]);
      expect(await connects("127.0.0.1", b.port)).toBe(false);
      const id = fs.readFileSync(join(b.root, ".mcfs/node-id"), "utf8").trim();
      expect(await cluster.redis.cli("hget", "mcfs:nodes", id)).toContain(`10.255.255.1:${b.port}`);
    } finally {
      await b.stop();
    }
  });

  test("--listen on an address this machine does not have is named in the error", async () => {
    const t = tempDir("listen-bad");
    try {
      const r = await refusedStart(["-f", join(t.path, "m"), "-r", join(t.path, "r"), "-u", cluster.redis.url, "--insecure", "-p", "0", "--listen", "192.0.2.1"]);
      expect(r.code).toBe(1);
      expect(r.err).toContain("192.0.2.1");
      expect(r.err).toContain("no such local address");
    } finally {
      t.remove();
    }
  });
});

describe.skipIf(!!(skip ?? opensslUnavailable()))("mutual TLS between nodes", () => {
  let t: ReturnType<typeof tempDir>;
  let redis: TestRedis;
  let ca: CertFiles, other: CertFiles, a: CertFiles, b: CertFiles, client: CertFiles, stranger: CertFiles;
  const nodes: TestDaemon[] = [];
  const tlsArgs = (c: CertFiles) => ["--tls-cert", c.cert, "--tls-key", c.key, "--tls-ca", ca.cert];
  const read = (f: string) => fs.readFileSync(f);

  beforeAll(async () => {
    t = tempDir("tls");
    ca = makeCa(t.path, "cluster-ca");
    other = makeCa(t.path, "other-ca");
    [a, b, client] = ["node-a", "node-b", "client"].map((n) => makeCert(t.path, n, ca)) as [CertFiles, CertFiles, CertFiles];
    stranger = makeCert(t.path, "stranger", other);
    redis = await startRedis();
    // No cluster secret: the certificates alone make the nodes members.
    for (const [name, cert] of [["a", a], ["b", b]] as const) nodes.push(await startDaemon({ base: t.path, name, args: ["-u", redis.url, ...tlsArgs(cert)] }));
  });
  afterAll(async () => {
    for (const d of nodes) await d.stop();
    await redis?.stop();
    t?.remove();
  });

  test("two nodes with TLS and no secret: a file written on A is read on B byte for byte", () => {
    const [na, nb] = nodes as [TestDaemon, TestDaemon];
    expect(na.log()).toContain('"auth":"mutual TLS"');
    const data = randomBytes(3 * MIB + 12345);
    fs.writeFileSync(join(na.mnt, "tls.bin"), data);
    expect(fs.readFileSync(join(nb.mnt, "tls.bin")).equals(data)).toBe(true);
  });

  test("a client with a certificate of the cluster CA is served; none, another CA's, or plain text are refused", async () => {
    const addr = `127.0.0.1:${nodes[0]!.port}`;
    const ok = { ca: read(ca.cert), checkServerIdentity: () => undefined };
    const call = (opts: object, scheme = "https") => codeOf(() => peerClient(addr, undefined, opts, scheme).read(served("/tls.bin")));
    expect(await call({ ...ok, cert: read(client.cert), key: read(client.key) })).toBe(SERVED);
    // Refused in the handshake (or, plain text, by a TLS port): no call ever reaches the service.
    expect(await call(ok)).not.toBe(SERVED);
    expect(await call({ ...ok, cert: read(stranger.cert), key: read(stranger.key) })).not.toBe(SERVED);
    expect(await call({}, "http")).not.toBe(SERVED);
    expect(nodes[0]!.log()).toContain("TLS handshake failed");
  });

  test("a node's client refuses a server whose certificate another CA signed", async () => {
    const root = join(t.path, "impostor-root");
    fs.mkdirSync(root);
    fs.writeFileSync(join(root, "bait"), "bait");
    const log = pino({ level: "silent" });
    const impostor = await startPeerServer({ root: openLocalDir(root), holdsInRoot: async (c) => c.map(() => true), port: 0, host: "127.0.0.1", log, tls: { cert: read(stranger.cert), key: read(stranger.key), ca: read(other.cert) } });
    try {
      const pool = createPeerPool({ timeoutMs: 5000, tls: { cert: read(client.cert), key: read(client.key), ca: read(ca.cert) } });
      let errno = 0;
      try {
        await call(() => pool.get(`127.0.0.1:${impostor.port}`).read(served("/bait")));
      } catch (e) {
        errno = (e as { errno: number }).errno;
      }
      expect(errno).toBe(5);
    } finally {
      await impostor.close();
    }
  });

  test("--tls-* flags: all three or none; unreadable, invalid and mismatched files are named", async () => {
    const base = ["-f", join(t.path, "m"), "-r", join(t.path, "r"), "-u", redis.url];
    const missing = await refusedStart([...base, "--tls-cert", a.cert, "--tls-key", a.key]);
    expect(missing.code).toBe(2);
    expect(missing.err).toContain("--tls-ca missing");
    const twoMissing = await refusedStart([...base, "--tls-cert", a.cert]);
    expect(twoMissing.err).toContain("--tls-key and --tls-ca missing");
    const gone = await refusedStart([...base, "--tls-cert", a.cert, "--tls-key", a.key, "--tls-ca", join(t.path, "nope.crt")]);
    expect(gone.code).toBe(2);
    expect(gone.err).toContain(`--tls-ca ${join(t.path, "nope.crt")}: no such file`);
    const junk = join(t.path, "junk.pem");
    fs.writeFileSync(junk, "not a certificate\n");
    const invalid = await refusedStart([...base, "--tls-cert", junk, "--tls-key", a.key, "--tls-ca", ca.cert]);
    expect(invalid.err).toContain(`--tls-cert ${junk} is not a PEM certificate`);
    const wrongKey = await refusedStart([...base, "--tls-cert", a.cert, "--tls-key", b.key, "--tls-ca", ca.cert]);
    expect(wrongKey.err).toContain(`--tls-key ${b.key} is not the key of --tls-cert ${a.cert}`);
    const foreign = await refusedStart([...base, "--tls-cert", stranger.cert, "--tls-key", stranger.key, "--tls-ca", ca.cert]);
    expect(foreign.err).toContain(`--tls-cert ${stranger.cert} (CN=stranger) is not signed by --tls-ca ${ca.cert}`);
    expect(fs.existsSync(join(t.path, "m"))).toBe(false);
  });
});

describe.skipIf(!!(skip ?? opensslUnavailable()))("Redis over TLS with an ACL user and the password in a file", () => {
  const PASSWORD = "redis-acl-password-4711";
  let t: ReturnType<typeof tempDir>;
  let redis: TlsRedis;
  let ca: CertFiles;
  let passwordFile: string;
  const redisFlags = () => ["--redis-ca", ca.cert, "--redis-password-file", passwordFile];

  beforeAll(async () => {
    t = tempDir("redis-tls");
    ca = makeCa(t.path, "redis-ca");
    redis = await startTlsRedis(makeCert(t.path, "redis", ca), ca.cert, "mcfs", PASSWORD);
    passwordFile = join(t.path, "redis-password");
    fs.writeFileSync(passwordFile, `${PASSWORD}\n`, { mode: 0o600 });
  });
  afterAll(async () => {
    await redis?.stop();
    t?.remove();
  });

  test("a daemon on rediss://mcfs@host:port with --redis-ca and --redis-password-file mounts and works; so does mcfs status", async () => {
    const d = await startDaemon({ base: t.path, name: "a", redisUrl: redis.url, args: redisFlags() });
    try {
      fs.writeFileSync(join(d.mnt, "over-tls.txt"), "metadata over TLS");
      expect(fs.readFileSync(join(d.mnt, "over-tls.txt"), "utf8")).toBe("metadata over TLS");
      expect(fs.readdirSync(d.mnt)).toContain("over-tls.txt");
      const st = spawn([MCFS, "status", "-u", redis.url, ...redisFlags(), "--json"], { stdout: "pipe", stderr: "pipe" });
      const out = await new Response(st.stdout).text();
      expect(await st.exited).toBe(0);
      expect(JSON.parse(out).nodes.length).toBe(1);
      expect(fs.readFileSync(`/proc/${d.proc.pid}/cmdline`, "utf8")).not.toContain(PASSWORD);
      expect(d.log()).not.toContain(PASSWORD);
    } finally {
      await d.stop();
    }
  });

  test("a wrong password is refused with an error naming the URL, not the password", async () => {
    const wrong = join(t.path, "wrong-password");
    fs.writeFileSync(wrong, "not-the-password-0000\n");
    const r = await refusedStart(["-f", join(t.path, "m"), "-r", join(t.path, "r"), "-u", redis.url, "--insecure", "--redis-ca", ca.cert, "--redis-password-file", wrong]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`cannot connect to Redis at ${redis.url}`);
    expect(r.err).toMatch(/WRONGPASS|invalid username-password/);
    expect(r.err).not.toContain("not-the-password-0000");
  });

  test("without --redis-ca the server's certificate is not trusted (system CAs), and the error says so", async () => {
    const r = await refusedStart(["-f", join(t.path, "m"), "-r", join(t.path, "r"), "-u", redis.url, "--insecure", "--redis-password-file", passwordFile]);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`cannot connect to Redis at ${redis.url}`);
    expect(r.err).toMatch(/certificate/i);
  });

  test("--redis-ca and --redis-password-file errors name the flag and file, for every role", async () => {
    const base = ["-f", join(t.path, "m"), "-r", join(t.path, "r"), "--insecure"];
    const plain = await refusedStart([...base, "-u", "redis://127.0.0.1:1", "--redis-ca", ca.cert]);
    expect(plain.code).toBe(2);
    expect(plain.err).toContain("--redis-ca is for a TLS Redis URL (rediss://");
    const twice = await refusedStart([...base, "-u", "rediss://mcfs:inline-secret@127.0.0.1:1", "--redis-password-file", passwordFile]);
    expect(twice.err).toContain("the Redis password is given twice");
    expect(twice.err).not.toContain("inline-secret");
    for (const role of [["daemon", ...base, "-u", redis.url], ["status", "-u", redis.url], ["node", "forget", "x", "-u", redis.url], ["csi-controller", "-u", redis.url], ["csi-node", "-u", redis.url]]) {
      const p = spawn([MCFS, ...role, "--redis-password-file", join(t.path, "missing")], { stdout: "ignore", stderr: "pipe" });
      const err = await new Response(p.stderr).text();
      expect(await p.exited).toBe(2);
      expect(err).toContain(`--redis-password-file ${join(t.path, "missing")}: no such file`);
    }
    expect(fs.existsSync(join(t.path, "m"))).toBe(false);
  });
});
