import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { Http2SessionManager, createGrpcTransport } from "@connectrpc/connect-node";
import { Peer, type ReadFilesRequest, type ReadRequest } from "../gen/mcfs/v1/peer_pb.ts";
import { intercepted } from "./file-frames.ts";
import { readFileFrames, readFilesFrames, WINDOW, type ChunkIn, type FileFramesOptions, type PieceIn } from "./file-frames-reader.ts";
import { fromConnectError } from "./errors.ts";
import { clientTlsOptions, type PeerTls } from "./peer-tls.ts";

export type PeerClient = Client<typeof Peer>;

/**
 * Clients for the other nodes, made on first use: one HTTP/2 connection per node and lane. Lanes let
 * one big file come over several connections at once: one connection carried ~250 MB/s of a stream
 * here (each message waits on its connection's turn through both event loops), four carried ~500.
 */
export interface PeerPool {
  get(address: string, lane?: number): PeerClient;
  /** ReadFile read off the stream as it comes (file-frames-reader.ts), on the same connection as get's client. */
  readFile(address: string, r: ReadRequest, lane?: number, signal?: AbortSignal): AsyncIterable<ChunkIn>;
  /** ReadFiles read off the stream as it comes, as readFile. */
  readFiles(address: string, r: ReadFilesRequest): AsyncIterable<PieceIn[]>;
  close(): void;
}

export interface PeerPoolOptions {
  secret?: string;
  /** Dial over mutual TLS: present this node's certificate, accept servers certified by the cluster CA. */
  tls?: PeerTls;
  /** Per-call deadline. */
  timeoutMs: number;
  interceptors?: Interceptor[];
}

export function createPeerPool(o: PeerPoolOptions): PeerPool {
  const clients = new Map<string, { client: PeerClient; session: Http2SessionManager }>();
  const auth: Interceptor = (next) => (req) => {
    if (o.secret) req.header.set("authorization", `Bearer ${o.secret}`);
    return next(req);
  };
  const tls = o.tls && clientTlsOptions(o.tls);
  const connect = (address: string, lane: number) => {
    const key = `${lane} ${address}`;
    let c = clients.get(key);
    if (!c) {
      const baseUrl = `${tls ? "https" : "http"}://${address}`;
      // HTTP/2's default 64 KiB window stalls every 128 KiB message on a window update; frames of up
      // to 256 KiB bring such a message in one piece, not eight to be joined by a copy (from servers
      // that send them: Bun's sends 16 KiB frames whatever the client allows).
      const session = new Http2SessionManager(baseUrl, { idleConnectionTimeoutMs: 60_000 }, { ...tls, settings: { initialWindowSize: WINDOW, maxFrameSize: 1 << 18 } });
      const transport = createGrpcTransport({
        baseUrl,
        interceptors: [...(o.interceptors ?? []), auth],
        defaultTimeoutMs: o.timeoutMs,
        acceptCompression: [],
        sessionManager: session,
      });
      clients.set(key, (c = { client: createClient(Peer, transport), session }));
    }
    return c;
  };
  const headers: Record<string, string> = o.secret ? { authorization: `Bearer ${o.secret}` } : {};
  /** A call whose replies are read off the stream (file-frames-reader.ts), through the interceptors as Connect's would be. */
  async function* framed<I, O>(address: string, lane: number, signal: AbortSignal | undefined, r: I, read: (s: Http2SessionManager, r: I, f: FileFramesOptions) => AsyncIterable<O>, method: typeof Peer.method.readFile | typeof Peer.method.readFiles): AsyncIterable<O> {
    const { session } = connect(address, lane);
    const stop = signal ?? new AbortController().signal;
    const one = (async function* () {
      yield r;
    })();
    yield* await intercepted(o.interceptors ?? [], `${tls ? "https" : "http"}://${address}`, stop, one, (req) => read(session, req, { headers, timeoutMs: o.timeoutMs, signal: stop }), method);
  }
  return {
    get: (address, lane = 0) => connect(address, lane).client,
    readFile: (address, r, lane = 0, signal) => framed(address, lane, signal, r, readFileFrames, Peer.method.readFile),
    readFiles: (address, r) => framed(address, 0, undefined, r, readFilesFrames, Peer.method.readFiles),
    close() {
      clients.clear();
    },
  };
}

/** Run a peer call; failures come back as errno-carrying errors (EIO when the peer is unreachable). */
export async function call<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw fromConnectError(e);
  }
}
