import * as http2 from "node:http2";
import { readFileSync } from "node:fs";

export interface FloodResult {
  /** grpc-status the server answered with (undefined: the stream ended without one). */
  grpcStatus?: number;
  /** Bytes of the body the client got to write before the stream ended. */
  written: number;
}

const CHUNK = Buffer.alloc(1 << 20);

/**
 * One gRPC call whose single message claims `bytes` and is streamed as zeros (never held whole in
 * memory), as an attacker would send it; it stops when the server ends or resets the stream.
 */
export async function floodCall(url: string, bytes: number, headers: Record<string, string> = {}, options: http2.SecureClientSessionOptions = {}): Promise<FloodResult> {
  const session = http2.connect(url, options);
  session.on("error", () => {});
  try {
    const stream = session.request({ ":method": "POST", ":path": "/mcfs.v1.Peer/Read", "content-type": "application/grpc", te: "trailers", ...headers });
    let grpcStatus: number | undefined;
    const status = (h: http2.IncomingHttpHeaders) => h["grpc-status"] !== undefined && (grpcStatus = Number(h["grpc-status"]));
    stream.on("response", status);
    stream.on("trailers", status);
    stream.on("error", () => {});
    stream.resume();
    const closed = new Promise<void>((res) => stream.once("close", () => res()));
    let over = false;
    void closed.then(() => (over = true));
    const envelope = Buffer.alloc(5);
    envelope.writeUInt32BE(bytes - 5, 1);
    let written = 0;
    const write = async (b: Buffer) => {
      if (!stream.write(b)) await Promise.race([new Promise((r) => stream.once("drain", r)), closed]);
      written += b.length;
    };
    await write(envelope);
    while (!over && written < bytes) await write(CHUNK.subarray(0, Math.min(CHUNK.length, bytes - written)));
    if (!over) stream.end();
    await closed;
    return { grpcStatus, written };
  } finally {
    session.destroy();
  }
}

/** Resident memory of a process in bytes (VmRSS of /proc/PID/status). */
export function rssBytes(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
  if (!m) throw new Error(`no VmRSS for pid ${pid}`);
  return Number(m[1]) * 1024;
}

/** The local addresses a TCP port is listened on, from /proc/net/tcp and tcp6 (e.g. "127.0.0.1", "0.0.0.0", "::"). */
export function listeningAddresses(port: number): string[] {
  const out: string[] = [];
  for (const file of ["/proc/net/tcp", "/proc/net/tcp6"]) {
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } catch {
      continue;
    }
    for (const line of text.split("\n").slice(1)) {
      const f = line.trim().split(/\s+/);
      if (f.length < 4 || f[3] !== "0A") continue; // 0A: LISTEN
      const [hex, p] = f[1]!.split(":");
      if (parseInt(p!, 16) !== port) continue;
      out.push(hex!.length === 8 ? hexV4(hex!) : hex === "0".repeat(32) ? "::" : hex!);
    }
  }
  return out;
}

const hexV4 = (h: string) => [3, 2, 1, 0].map((i) => parseInt(h.slice(i * 2, i * 2 + 2), 16)).join(".");
