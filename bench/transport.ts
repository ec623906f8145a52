/**
 * How fast the transports a peer could use carry bytes between two processes on this machine, with
 * no disk on either side: node:http2 in Bun (what the peer service runs on: Connect's gRPC) beside a
 * plain TCP socket (Bun.listen / Bun.connect). Each sends MIB MiB in 128 KiB messages (the peer
 * service's chunk) to a receiver in another process, which counts them. The cross-node first read of
 * a big file can go no faster than the first, whatever mcfs does around it.
 *
 *   bun bench/transport.ts [MiB=1024]
 */
import { spawn, type Socket } from "bun";

const MIB = Number(process.argv[2] ?? 1024);
const CHUNK = 128 * 1024;
const role = process.env.TRANSPORT_ROLE;

/** Sender side, in this process: serves MIB MiB to whoever connects, then exits with the receiver. */
async function sendHttp2(maxFrameSize: number): Promise<number> {
  const http2 = await import("node:http2");
  const server = http2.createServer({}, (_req, res) => {
    res.writeHead(200);
    const buf = Buffer.alloc(CHUNK, 7);
    let n = 0;
    const go = () => {
      while (n < MIB * 8) {
        n++;
        if (!res.write(buf)) return void res.once("drain", go);
      }
      res.end();
    };
    go();
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as { port: number }).port;
  const mbps = await receiver("http2", port, maxFrameSize);
  server.close();
  return mbps;
}

/** Messages sent so far, and what the socket did not take of the last one. */
interface Sending {
  n: number;
  rest?: Buffer | undefined;
}

async function sendTcp(): Promise<number> {
  const buf = Buffer.alloc(CHUNK, 7);
  const server = Bun.listen<Sending>({
    hostname: "127.0.0.1",
    port: 0,
    socket: {
      open(s) {
        s.data = { n: 0 };
        pump(s);
      },
      drain: (s) => pump(s),
      data() {},
    },
  });
  /** Writes until the socket takes no more (its drain calls again); a partial write is finished first. */
  function pump(s: Socket<Sending>): void {
    for (;;) {
      const d = s.data;
      const out = d.rest ?? (d.n < MIB * 8 ? (d.n++, buf) : undefined);
      if (!out) return void s.end();
      const w = s.write(out);
      if (w < out.length) {
        d.rest = out.subarray(w);
        return;
      }
      d.rest = undefined;
    }
  }
  const mbps = await receiver("tcp", server.port, 0);
  server.stop(true);
  return mbps;
}

/** Runs the receiving side in another process; its MB/s. */
async function receiver(kind: string, port: number, maxFrameSize: number): Promise<number> {
  const p = spawn([process.execPath, import.meta.path, String(MIB)], { env: { ...process.env, TRANSPORT_ROLE: kind, PORT: String(port), FRAME: String(maxFrameSize) }, stdout: "pipe", stderr: "inherit" });
  const out = await new Response(p.stdout).text();
  if ((await p.exited) !== 0) throw new Error(`${kind} receiver failed`);
  return Number(out.trim());
}

async function receive(): Promise<void> {
  const port = Number(process.env.PORT);
  const total = MIB * 2 ** 20;
  const t0 = performance.now();
  let bytes = 0;
  if (role === "http2") {
    const http2 = await import("node:http2");
    const frame = Number(process.env.FRAME);
    const c = http2.connect(`http://127.0.0.1:${port}`, { settings: { initialWindowSize: 8 << 20, maxFrameSize: frame } });
    const s = c.request({ ":path": "/" });
    s.on("data", (d: Buffer) => void (bytes += d.length));
    await new Promise((r) => s.on("end", r));
    c.close();
  } else {
    await new Promise<void>((resolve) => {
      void Bun.connect({ hostname: "127.0.0.1", port, socket: { data: (_s, d) => void (bytes += d.length), close: () => resolve(), end: () => resolve() } });
    });
  }
  if (bytes !== total) throw new Error(`received ${bytes} of ${total} bytes`);
  console.log((bytes / 1e6 / ((performance.now() - t0) / 1000)).toFixed(0));
}

if (role) await receive();
else {
  const rows: [string, number][] = [];
  for (const frame of [16384, 1 << 18]) rows.push([`node:http2, client maxFrameSize ${frame}`, await sendHttp2(frame)]);
  rows.push(["TCP socket (Bun.listen / Bun.connect)", await sendTcp()]);
  console.log(`| transport (${MIB} MiB in 128 KiB writes, loopback, no disk) | MB/s |\n|---|---:|`);
  for (const [k, v] of rows) console.log(`| ${k} | ${v} |`);
}
