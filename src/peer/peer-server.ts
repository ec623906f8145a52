import * as http2 from "node:http2";
import * as net from "node:net";
import { listenFailure } from "../util/errno.ts";
import type { Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Peer } from "../gen/mcfs/v1/peer_pb.ts";
import { peerGate, refuseStream } from "./peer-gate.ts";
import { serverTlsOptions, type PeerTls } from "./peer-tls.ts";
import { limitConnections } from "./connection-limits.ts";
import { everyFewSeconds } from "./refusal-log.ts";
import type { Logger } from "../util/log.ts";
import { createPeerService, type PeerServiceOptions } from "./peer-service.ts";
import { framedCalls, serveFramed } from "./file-frames.ts";
import { H2_PREFACE, MAGIC } from "./bulk-protocol.ts";
import { serveBulk } from "./bulk-server.ts";
import { filePool } from "../local/file-pool.ts";

/**
 * Largest request message a peer may send. The largest real one is a readFiles batch of up to 512
 * file refs with paths of at most 4 KiB (~2.1 MiB with their framing); 4 MiB leaves room for that and
 * is what one stream of an authenticated caller can make this node hold.
 */
export const READ_MAX_BYTES = 4 << 20;

/**
 * Transport bounds, so that what callers can make the server hold is fixed whatever they send.
 * Request bodies are only buffered up to the HTTP/2 flow-control windows (left at the protocol's
 * 64 KiB per stream and per connection: requests are small, replies flow the other way under the
 * client's window) until a handler reads them, and handlers run only for members (see peer-gate.ts).
 */
const LIMITS = {
  /**
   * Concurrent calls on one connection. Only members' streams live past their headers, and their
   * unread bodies share the connection's window; Bun's client fails calls over this limit instead of
   * queueing them, so it stays far above what one node's FUSE requests put in flight.
   */
  streamsPerConnection: 1024,
  /** Nodes behind one NAT address share it: room for a site of 64 nodes. */
  connectionsPerAddress: 64,
  connections: 1024,
  /** A connection with no traffic this long is closed; clients close theirs after 60 s idle first. */
  idleMs: 120_000,
  /**
   * A connection must carry a member's call this soon after it opens (a node dials when it needs to
   * read, so its first call comes at once), or it is closed: connections that send nothing cannot
   * hold the slots above.
   */
  proveWithinMs: 5_000,
  /** Node's cap on one session's buffered frames, in MB (the windows above bound it on Bun). */
  sessionMemoryMb: 16,
};

export interface PeerServerOptions extends PeerServiceOptions {
  port: number;
  /** Address to listen on (-i, or --listen when the dialed address is not local). */
  host: string;
  /** Cluster secret every caller must present; undefined with TLS alone, or with --insecure. */
  secret?: string;
  /** Mutual TLS: only holders of a certificate of the cluster CA get through the handshake. */
  tls?: PeerTls;
  /** For metrics: RPCs observed. */
  interceptors?: Interceptor[];
  /** For metrics: a bulk read answered (errno 0: whole). */
  observeBulk?(errno: number, seconds: number): void;
  log: Logger;
}

export interface PeerServer {
  readonly port: number;
  close(): Promise<void>;
}

/** The peer service on the network: members only (see peer-gate.ts), bounded, errors with their errno. */
export async function startPeerServer(o: PeerServerOptions): Promise<PeerServer> {
  const { impl, readFile, readFiles, openFile } = createPeerService(o);
  const framed = framedCalls({ readFile, readFiles });

  const handler = connectNodeAdapter({
    routes: (router) => router.service(Peer, impl),
    // File bytes go as they are: gzip ran at ~30 MB/s on incompressible data and was the bottleneck.
    acceptCompression: [],
    readMaxBytes: READ_MAX_BYTES,
    interceptors: o.interceptors ?? [],
  });
  const gate = peerGate({ secret: o.secret, tls: o.tls !== undefined });
  const warnRefused = everyFewSeconds((n, remote: string, why: string) => o.log.warn({ remote, why, refusedSinceLastWarning: n }, "refused a peer"));
  const serve = (req: http2.Http2ServerRequest, res: http2.Http2ServerResponse) => {
    const refused = gate(req);
    if (refused === undefined) {
      connections.proven(req.socket.remoteAddress, req.socket.remotePort);
      // A reply sent before the request was read to its end (a message over READ_MAX_BYTES) resets
      // the stream, so the caller stops sending instead of waiting on a window nobody opens.
      req.stream.once("finish", () => req.stream.readableEnded || req.stream.close());
      const f = framed.get(req.url);
      if (f && /^application\/grpc(\+proto)?$/.test(req.headers["content-type"] ?? "")) {
        return void serveFramed(req, res, f, { readMaxBytes: READ_MAX_BYTES, interceptors: o.interceptors ?? [] }).catch((e: unknown) => {
          o.log.warn({ err: (e as Error).message }, "a file stream to a peer failed");
          res.destroy();
        });
      }
      return void handler(req, res);
    }
    warnRefused(req.socket.remoteAddress ?? "?", refused);
    refuseStream(req, res, refused);
  };
  const h2: http2.ServerOptions = { settings: { maxConcurrentStreams: LIMITS.streamsPerConnection }, maxSessionMemory: LIMITS.sessionMemoryMb };
  const server = o.tls ? http2.createSecureServer({ ...h2, ...serverTlsOptions(o.tls) }, serve) : http2.createServer(h2, serve);
  /** Every connection, closed at stop: a member's idle ones would hold the port's close for a minute. */
  const open = new Set<net.Socket>();
  // In plain text the port also takes the bulk lane (bulk-protocol.ts), told apart by a connection's first bytes.
  const front = o.tls
    ? server
    : net.createServer((socket) => {
        open.add(socket);
        socket.once("close", () => open.delete(socket));
        socket.on("error", () => {});
        let head: Buffer = Buffer.alloc(0);
        const sniff = (d: Buffer) => {
          head = head.length ? Buffer.concat([head, d]) : d;
          if (head.length < 4) return;
          socket.off("data", sniff);
          const remote = socket.remoteAddress ?? "?";
          if (head.subarray(0, 4).equals(H2_PREFACE)) {
            socket.pause();
            socket.unshift(head);
            server.emit("connection", socket);
            socket.resume();
          } else if (head.subarray(0, 4).equals(MAGIC)) {
            // As an HTTP/2 session: a connection with no traffic this long is closed (a reader that stopped reading too).
            socket.setTimeout(LIMITS.idleMs, () => socket.destroy());
            socket.setNoDelay(true);
            serveBulk(socket, head, {
              ...(o.secret === undefined ? {} : { secret: o.secret }),
              readFile,
              threads: { openFile, send: filePool().send, stream: () => filePool().stream("send"), idleMs: LIMITS.idleMs },
              proven: () => connections.proven(socket.remoteAddress, socket.remotePort),
              refused: (why) => warnRefused(remote, why),
              ...(o.observeBulk ? { observe: o.observeBulk } : {}),
            });
          } else {
            warnRefused(remote, "neither HTTP/2 nor a bulk request");
            socket.destroy();
          }
        };
        socket.on("data", sniff);
      });
  const connections = limitConnections(front, { perAddress: LIMITS.connectionsPerAddress, total: LIMITS.connections, proveWithinMs: LIMITS.proveWithinMs }, (remote, why) => warnRefused(remote, why));
  server.on("session", (session: http2.ServerHttp2Session) => session.setTimeout(LIMITS.idleMs, () => session.close()));
  if (o.tls) server.on("tlsClientError", (e: Error, socket: { remoteAddress?: string }) => warnRefused(socket.remoteAddress ?? "?", `TLS handshake failed: ${e.message}`));
  await new Promise<void>((res, rej) => {
    front.once("error", (e: NodeJS.ErrnoException) => rej(new Error(`cannot serve peers on ${o.host}:${o.port}: ${listenFailure(e)}`)));
    front.listen(o.port, o.host, () => res());
  });
  const addr = front.address();
  const port = typeof addr === "object" && addr ? addr.port : o.port;
  const auth = [o.tls && "mutual TLS", o.secret && "cluster secret"].filter(Boolean).join(" + ") || "none (--insecure)";
  o.log.info({ host: o.host, port, auth }, "serving peers");
  return {
    port,
    close: () =>
      new Promise<void>((res) => {
        front.close(() => res());
        for (const s of open) s.resetAndDestroy ? s.resetAndDestroy() : s.destroy();
      }),
  };
}
