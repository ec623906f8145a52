import type { Http2ServerRequest, Http2ServerResponse } from "node:http2";
import type { TLSSocket } from "node:tls";
import { timingSafeEqual } from "node:crypto";
import { Code } from "@connectrpc/connect";

export interface GateOptions {
  /** Cluster secret every caller must present; undefined with TLS alone or --insecure. */
  secret?: string;
  /** Serving over mutual TLS: the connection's client certificate must have been verified. */
  tls: boolean;
}

/** Why a caller without the cluster secret is refused. */
export const WRONG_SECRET = "missing or wrong cluster secret";

/** Whether given is the secret wanted, compared in constant time. */
export function sameSecret(want: Buffer, given: string): boolean {
  const got = Buffer.from(given);
  return got.length === want.length && timingSafeEqual(got, want);
}

/** Why a stream is refused, or undefined when its caller is a member of the cluster. */
export type Gate = (req: Http2ServerRequest) => string | undefined;

/**
 * Membership is decided from the stream's headers and its connection alone, before anything reads
 * the request body: a caller who is not a member costs no more than its headers.
 */
export function peerGate(o: GateOptions): Gate {
  const want = o.secret === undefined ? undefined : Buffer.from(`Bearer ${o.secret}`);
  return (req) => {
    // The handshake already refused unverified certificates; this holds should that ever be loosened.
    if (o.tls && (req.socket as TLSSocket).authorized !== true) return "no verified client certificate";
    if (!want) return undefined;
    if (!sameSecret(want, req.headers.authorization ?? "")) return WRONG_SECRET;
    return undefined;
  };
}

/**
 * Answer a refused stream with gRPC Unauthenticated, trailers-only (HTTP 200 + grpc-status in the one
 * header block), and reset the stream so the client stops sending its body; then close the
 * connection: a member never presents a wrong secret, so nothing more is expected on it.
 */
export function refuseStream(req: Http2ServerRequest, res: Http2ServerResponse, reason: string): void {
  res.writeHead(200, { "content-type": "application/grpc", "grpc-status": String(Code.Unauthenticated), "grpc-message": encodeURIComponent(reason) });
  res.end();
  req.stream.close();
  req.stream.session?.close();
}
