import { X509Certificate, createPrivateKey } from "node:crypto";
import type { SecureClientSessionOptions, SecureServerOptions } from "node:http2";
import { readFlagFile } from "../util/flag-file.ts";

/**
 * Mutual TLS between the nodes of a cluster: every node has a certificate signed by the cluster CA
 * and accepts exactly the certificates that CA signed, as servers and as clients.
 */
export interface PeerTls {
  cert: Buffer;
  key: Buffer;
  ca: Buffer;
}

export interface PeerTlsFiles {
  cert: string;
  key: string;
  ca: string;
}

function parse<T>(flag: string, file: string, what: string, fn: () => T): T {
  try {
    return fn();
  } catch (e) {
    throw new Error(`${flag} ${file} is not a PEM ${what} (${(e as Error).message})`);
  }
}

/**
 * The node's certificate, key and the cluster CA, checked to fit together now: a mismatch found at
 * start names the file, where the same mismatch found at the first peer call would be a bare TLS alert.
 */
export function loadPeerTls(f: PeerTlsFiles): PeerTls {
  const tls = { cert: readFlagFile("--tls-cert", f.cert), key: readFlagFile("--tls-key", f.key), ca: readFlagFile("--tls-ca", f.ca) };
  const cert = parse("--tls-cert", f.cert, "certificate", () => new X509Certificate(tls.cert));
  const key = parse("--tls-key", f.key, "private key", () => createPrivateKey(tls.key));
  const ca = parse("--tls-ca", f.ca, "certificate", () => new X509Certificate(tls.ca));
  if (!cert.checkPrivateKey(key)) throw new Error(`--tls-key ${f.key} is not the key of --tls-cert ${f.cert}`);
  if (!cert.verify(ca.publicKey)) throw new Error(`--tls-cert ${f.cert} (${cert.subject.replace(/\n/g, ", ")}) is not signed by --tls-ca ${f.ca} (${ca.subject.replace(/\n/g, ", ")})`);
  if (Date.parse(cert.validTo) < Date.now()) throw new Error(`--tls-cert ${f.cert} expired on ${cert.validTo}`);
  return tls;
}

/** Only clients with a certificate of the cluster CA finish the handshake. */
export function serverTlsOptions(t: PeerTls): SecureServerOptions {
  // A handshake that does not finish soon is dropped (its connection also has to prove itself: connection-limits.ts).
  return { cert: t.cert, key: t.key, ca: t.ca, requestCert: true, rejectUnauthorized: true, minVersion: "TLSv1.2", handshakeTimeout: 5_000 };
}

/**
 * Nodes dial each other by IP (-i), often without DNS names, and an address can move to another
 * node; so the server is not checked against the dialed name: any certificate signed by the cluster
 * CA proves a member. The chain is still verified (rejectUnauthorized) against the cluster CA only.
 */
export function clientTlsOptions(t: PeerTls): SecureClientSessionOptions {
  return { cert: t.cert, key: t.key, ca: t.ca, rejectUnauthorized: true, minVersion: "TLSv1.2", checkServerIdentity: () => undefined };
}
