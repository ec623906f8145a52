import * as http2 from "node:http2";
import { timingSafeEqual } from "node:crypto";
import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Peer } from "../gen/mcfs/v1/peer_pb.ts";
import { WINDOW } from "./peer-client.ts";
import type { Logger } from "../util/log.ts";
import { createPeerService, type PeerServiceOptions } from "./peer-service.ts";

export interface PeerServerOptions extends PeerServiceOptions {
  port: number;
  host?: string;
  /** Cluster secret every caller must present; undefined only with --insecure. */
  secret?: string;
  /** For metrics: RPCs observed. */
  interceptors?: Interceptor[];
  log: Logger;
}

export interface PeerServer {
  readonly port: number;
  close(): Promise<void>;
}

function authInterceptor(secret: string): Interceptor {
  const want = Buffer.from(`Bearer ${secret}`);
  return (next) => async (req) => {
    const got = Buffer.from(req.header.get("authorization") ?? "");
    if (got.length !== want.length || !timingSafeEqual(got, want)) throw new ConnectError("missing or wrong cluster secret", Code.Unauthenticated);
    return next(req);
  };
}

/** The peer service on the network: authenticated callers only, errors with their errno. */
export async function startPeerServer(o: PeerServerOptions): Promise<PeerServer> {
  const impl = createPeerService(o);

  const handler = connectNodeAdapter({
    routes: (router) => router.service(Peer, impl),
    // File bytes go as they are: gzip ran at ~30 MB/s on incompressible data and was the bottleneck.
    acceptCompression: [],
    interceptors: [...(o.interceptors ?? []), ...(o.secret ? [authInterceptor(o.secret)] : [])],
  });
  const server = http2.createServer({ settings: { initialWindowSize: WINDOW } }, handler);
  server.on("session", (session) => session.on("connect", () => session.setLocalWindowSize(WINDOW)));
  await new Promise<void>((res, rej) => {
    server.once("error", (e: NodeJS.ErrnoException) => rej(new Error(`cannot serve peers on ${o.host ?? "0.0.0.0"}:${o.port}: ${e.code === "EADDRINUSE" ? "port in use" : e.message}`)));
    server.listen(o.port, o.host ?? "0.0.0.0", () => res());
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : o.port;
  o.log.info({ port, auth: o.secret ? "cluster secret" : "none (--insecure)" }, "serving peers");
  return {
    port,
    close: () => new Promise<void>((res) => server.close(() => res())),
  };
}
