import { createClient, type Client, type Interceptor } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { Peer } from "../gen/mcfs/v1/peer_pb.ts";
import { fromConnectError } from "./errors.ts";
import { clientTlsOptions, type PeerTls } from "./peer-tls.ts";

export type PeerClient = Client<typeof Peer>;

/** HTTP/2 flow-control window for peer streams, both ways. */
export const WINDOW = 16 << 20;

/**
 * Clients for the other nodes, made on first use: one HTTP/2 connection per node and lane. Lanes let
 * one big file come over several connections at once: one connection carried ~250 MB/s of a stream
 * here (each message waits on its connection's turn through both event loops), four carried ~500.
 */
export interface PeerPool {
  get(address: string, lane?: number): PeerClient;
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
  const clients = new Map<string, PeerClient>();
  const auth: Interceptor = (next) => (req) => {
    if (o.secret) req.header.set("authorization", `Bearer ${o.secret}`);
    return next(req);
  };
  const tls = o.tls && clientTlsOptions(o.tls);
  return {
    get(address, lane = 0) {
      const key = `${lane} ${address}`;
      let c = clients.get(key);
      if (!c) {
        const transport = createGrpcTransport({
          baseUrl: `${tls ? "https" : "http"}://${address}`,
          interceptors: [...(o.interceptors ?? []), auth],
          defaultTimeoutMs: o.timeoutMs,
          idleConnectionTimeoutMs: 60_000,
          acceptCompression: [],
          // HTTP/2's default 64 KiB window stalls every 128 KiB message on a window update.
          nodeOptions: { ...tls, settings: { initialWindowSize: WINDOW } },
        });
        clients.set(key, (c = createClient(Peer, transport)));
      }
      return c;
    },
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
