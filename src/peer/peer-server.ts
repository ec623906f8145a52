import * as http2 from "node:http2";
import * as fs from "node:fs";
import type { Interceptor, ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Peer } from "../gen/mcfs/v1/peer_pb.ts";
import { confine } from "./confine.ts";
import { fromConnectError, toConnectError } from "./errors.ts";
import { peerGate, refuseStream } from "./peer-gate.ts";
import { serverTlsOptions, type PeerTls } from "./peer-tls.ts";
import { limitConnections } from "./connection-limits.ts";
import { everyFewSeconds } from "./refusal-log.ts";
import type { Logger } from "../util/log.ts";
import { E, FsError, toErrno } from "../util/errno.ts";
import { readCopy, type CopyData } from "../cache/copy-cache.ts";

/** Stream messages stay at or under 128 KiB: larger ones stall some gRPC clients on Bun's HTTP/2. */
export const CHUNK = 128 * 1024;

const { O_RDONLY, O_WRONLY, O_CREAT, O_EXCL, O_NOFOLLOW } = fs.constants;

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
  /** Node's cap on one session's buffered frames, in MB (the windows above bound it on Bun). */
  sessionMemoryMb: 16,
};

export interface PeerServerOptions {
  rootPath: string;
  port: number;
  /** Address to listen on (-i, or --listen when the dialed address is not local). */
  host: string;
  /** Cluster secret every caller must present; undefined with TLS alone, or with --insecure. */
  secret?: string;
  /** Mutual TLS: only holders of a certificate of the cluster CA get through the handshake. */
  tls?: PeerTls;
  /** The cached copy of ino at version, if this node has one (a fd is closed after use). */
  openCached?: (ino: number, version: number) => CopyData | undefined;
  /** For each copy, whether this node is listed as holding that version in its root path. */
  holdsInRoot?: (copies: { ino: number; version: number }[]) => Promise<boolean[]>;
  /** For metrics: RPCs observed, file bytes served. */
  interceptors?: Interceptor[];
  onServed?: (bytes: number) => void;
  /** Follow other nodes' renames on the local disk (called once when an asked-for file is missing). */
  catchUp?: () => Promise<void>;
  log: Logger;
}

export interface PeerServer {
  readonly port: number;
  close(): Promise<void>;
}

function attrOf(st: fs.BigIntStats) {
  return {
    size: st.size, mode: Number(st.mode), uid: Number(st.uid), gid: Number(st.gid), nlink: Number(st.nlink),
    atimeNs: st.atimeNs, mtimeNs: st.mtimeNs, ctimeNs: st.ctimeNs,
  };
}

/** The node's root path served to other nodes: every request confined to it, errors with their errno. */
export async function startPeerServer(o: PeerServerOptions): Promise<PeerServer> {
  const root = o.rootPath;
  const realRoot = fs.realpathSync(root);
  const at = (p: string) => confine(root, realRoot, p);
  const done = {};

  const missing = (e: unknown) => (e as NodeJS.ErrnoException).code === "ENOENT" || (e as { errno?: number }).errno === 2;
  const guarded = <A extends unknown[], R>(fn: (...a: A) => R | Promise<R>) => async (...a: A): Promise<R> => {
    try {
      try {
        return await fn(...a);
      } catch (e) {
        if (!missing(e) || !o.catchUp) throw e;
        await o.catchUp();
        return await fn(...a);
      }
    } catch (e) {
      throw toConnectError(e);
    }
  };

  /** The file a read asks for: with ino, only the bytes of that version (cache, else root path). */
  async function openForRead(r: { path: string; ino: bigint; version: bigint }, held?: Promise<boolean>): Promise<CopyData> {
    if (r.ino) {
      const ino = Number(r.ino), version = Number(r.version);
      const c = o.openCached?.(ino, version);
      if (c) return c;
      if (o.holdsInRoot && !(await (held ?? o.holdsInRoot([{ ino, version }]).then((r) => r[0])))) throw new FsError(E.ESTALE, `no copy of ${r.path} at version ${version} here`);
    }
    return { fd: fs.openSync(at(r.path), O_RDONLY | O_NOFOLLOW) };
  }
  const closeCopy = (c: CopyData) => {
    if ("fd" in c) fs.closeSync(c.fd);
  };

  const impl: ServiceImpl<typeof Peer> = {
    exists: guarded((r) => ({ exists: fs.existsSync(at(r.path)) })),
    getAttr: guarded((r) => ({ attr: attrOf(fs.lstatSync(at(r.path), { bigint: true })) })),
    readDir: guarded((r) => ({
      entries: fs.readdirSync(at(r.path), { withFileTypes: true }).filter((d) => !(r.path === "/" && d.name === ".mcfs")).map((d) => ({ name: d.name, mode: fs.lstatSync(`${at(r.path)}/${d.name}`).mode })),
    })),
    read: guarded(async (r) => {
      const c = await openForRead(r);
      try {
        const buf = Buffer.allocUnsafe(Math.min(Number(r.length) || CHUNK, 16 * CHUNK));
        const n = readCopy(c, buf, Number(r.offset));
        o.onServed?.(n);
        return { data: buf.subarray(0, n) };
      } finally {
        closeCopy(c);
      }
    }),
    async *readFile(r) {
      const c = await guarded(() => openForRead(r))();
      try {
        let off = Number(r.offset);
        const end = r.length ? off + Number(r.length) : Infinity;
        for (;;) {
          const want = Math.min(CHUNK, end - off);
          if (want <= 0) return;
          const buf = Buffer.allocUnsafe(want);
          const n = readCopy(c, buf, off);
          if (n === 0) return;
          o.onServed?.(n);
          yield { offset: BigInt(off), data: buf.subarray(0, n) };
          off += n;
        }
      } finally {
        closeCopy(c);
      }
    },
    async *readFiles(r) {
      // Every file's holder check at once (one round trip to Redis); opened in order as the stream
      // goes; a file that fails is reported and the rest still come.
      const all = o.holdsInRoot?.(r.files.map((f) => ({ ino: Number(f.ino), version: Number(f.version) })));
      all?.catch(() => {});
      const held = r.files.map((_, i) => all?.then((h) => h[i] === true));
      let pieces: { index: number; offset: bigint; data: Uint8Array; errno: number; last: boolean }[] = [];
      // One buffer per message, filled by consecutive files.
      let buf = Buffer.allocUnsafe(CHUNK);
      let used = 0;
      for (const [index, f] of r.files.entries()) {
        let c: CopyData;
        try {
          c = await guarded(() => openForRead(f, held[index]))();
        } catch (e) {
          pieces.push({ index, offset: 0n, data: new Uint8Array(0), errno: fromConnectError(e).errno, last: true });
          continue;
        }
        try {
          for (let off = 0; ; ) {
            if (used === CHUNK) {
              yield { pieces };
              pieces = [];
              buf = Buffer.allocUnsafe(CHUNK);
              used = 0;
            }
            const n = readCopy(c, buf.subarray(used), off);
            const last = used + n < CHUNK;
            pieces.push({ index, offset: BigInt(off), data: buf.subarray(used, used + n), errno: 0, last });
            o.onServed?.(n);
            used += n;
            off += n;
            if (last) break;
          }
        } catch (e) {
          pieces.push({ index, offset: 0n, data: new Uint8Array(0), errno: toErrno(e), last: true });
        } finally {
          closeCopy(c);
        }
      }
      if (pieces.length) yield { pieces };
    },
    write: guarded((r) => {
      const fd = fs.openSync(at(r.path), O_WRONLY | O_NOFOLLOW);
      try {
        return { written: BigInt(fs.writeSync(fd, r.data, 0, r.data.length, Number(r.offset))) };
      } finally {
        fs.closeSync(fd);
      }
    }),
    truncate: guarded((r) => (fs.truncateSync(at(r.path), Number(r.size)), done)),
    chown: guarded((r) => (fs.lchownSync(at(r.path), r.uid, r.gid), done)),
    chmod: guarded((r) => (fs.chmodSync(at(r.path), r.mode & 0o7777), done)),
    unlink: guarded((r) => (fs.unlinkSync(at(r.path)), done)),
    rmdir: guarded((r) => (fs.rmdirSync(at(r.path)), done)),
    rename: guarded((r) => (fs.renameSync(at(r.from), at(r.to)), done)),
    access: guarded((r) => (fs.accessSync(at(r.path), r.mask), done)),
    utimens: guarded((r) => (fs.utimesSync(at(r.path), Number(r.atimeNs) / 1e9, Number(r.mtimeNs) / 1e9), done)),
    mkdir: guarded((r) => (fs.mkdirSync(at(r.path), r.mode & 0o7777), done)),
    create: guarded((r) => (fs.closeSync(fs.openSync(at(r.path), O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW, r.mode & 0o7777)), done)),
  };

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
      // A reply sent before the request was read to its end (a message over READ_MAX_BYTES) resets
      // the stream, so the caller stops sending instead of waiting on a window nobody opens.
      req.stream.once("finish", () => req.stream.readableEnded || req.stream.close());
      return void handler(req, res);
    }
    warnRefused(req.socket.remoteAddress ?? "?", refused);
    refuseStream(req, res, refused);
  };
  const h2: http2.ServerOptions = { settings: { maxConcurrentStreams: LIMITS.streamsPerConnection }, maxSessionMemory: LIMITS.sessionMemoryMb };
  const server = o.tls ? http2.createSecureServer({ ...h2, ...serverTlsOptions(o.tls) }, serve) : http2.createServer(h2, serve);
  limitConnections(server, { perAddress: LIMITS.connectionsPerAddress, total: LIMITS.connections }, (remote, why) => warnRefused(remote, why));
  server.on("session", (session: http2.ServerHttp2Session) => session.setTimeout(LIMITS.idleMs, () => session.close()));
  if (o.tls) server.on("tlsClientError", (e: Error, socket: { remoteAddress?: string }) => warnRefused(socket.remoteAddress ?? "?", `TLS handshake failed: ${e.message}`));
  await new Promise<void>((res, rej) => {
    server.once("error", (e: NodeJS.ErrnoException) => rej(new Error(`cannot serve peers on ${o.host}:${o.port}: ${e.code === "EADDRINUSE" ? "port in use" : e.code === "EADDRNOTAVAIL" ? "no such local address (give --listen an address of this machine)" : e.message}`)));
    server.listen(o.port, o.host, () => res());
  });
  const addr = server.address();
  const port = typeof addr === "object" && addr ? addr.port : o.port;
  const auth = [o.tls && "mutual TLS", o.secret && "cluster secret"].filter(Boolean).join(" + ") || "none (--insecure)";
  o.log.info({ host: o.host, port, auth }, "serving peers");
  return {
    port,
    close: () => new Promise<void>((res) => server.close(() => res())),
  };
}
