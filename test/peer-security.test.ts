import { afterAll, beforeAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import * as net from "node:net";
import { join } from "node:path";
import { randomBytes } from "node:crypto";
import { spawn } from "bun";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Peer } from "../src/gen/mcfs/v1/peer_pb.ts";
import { MCFS, fuseUnavailable, tempDir, waitFor } from "./helpers/env.ts";
import { startDaemon, type TestDaemon } from "./helpers/daemon.ts";
import { startRedis, type TestRedis } from "./helpers/redis.ts";
import { useCluster } from "./helpers/node.ts";
import { floodCall, listeningAddresses, rssBytes } from "./helpers/flood.ts";

const skip = fuseUnavailable();
const SECRET = "test-cluster-secret-0123456789";
const MIB = 1 << 20;

/** The Connect code a call failed with ("OK" if it succeeded). Bun's expect().rejects stalls HTTP/2 I/O. */
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
      const headers = i % 2 ? { authorization: "Bearer wrong-secret-wrong-secret" } : {};
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

  test("connections from one address beyond 32 are closed at once; members get through again after", async () => {
    let closedByServer = 0;
    const socks = Array.from({ length: 40 }, () => {
      const s = net.connect(a.port, "127.0.0.1");
      s.on("error", () => {});
      s.on("close", () => closedByServer++);
      return s;
    });
    await waitFor("the connections over the limit closed", () => closedByServer >= 8);
    for (const s of socks) s.destroy();
    expect(await codeOf(() => peerClient(`127.0.0.1:${a.port}`, SECRET).exists({ path: "/still-here.txt" }))).toBe("OK");
  });
});
