import * as fs from "node:fs";
import { E, errnoOf } from "../util/errno.ts";
import * as http2 from "node:http2";
import { dirname } from "node:path";
import type { Interceptor, ServiceImpl } from "@connectrpc/connect";
import { connectNodeAdapter } from "@connectrpc/connect-node";
import { Controller, Identity, Node } from "../gen/csi/v1/csi_pb.ts";
import type { Logger } from "../util/log.ts";

export interface CsiServices {
  identity: ServiceImpl<typeof Identity>;
  controller?: Partial<ServiceImpl<typeof Controller>>;
  node?: Partial<ServiceImpl<typeof Node>>;
}

export interface CsiServer {
  close(): Promise<void>;
}

/** Where to listen: unix:///path/to.sock (also unix:/path) or tcp://host:port. */
export function parseEndpoint(endpoint: string): { path: string } | { host: string; port: number } {
  const unix = /^unix:\/\/(\/.+)$/.exec(endpoint) ?? /^unix:(\/[^/].*)$/.exec(endpoint);
  if (unix) return { path: unix[1]! };
  const tcp = /^tcp:\/\/([^:/]*):(\d+)$/.exec(endpoint);
  if (tcp && Number(tcp[2]) <= 65535) return { host: tcp[1] || "0.0.0.0", port: Number(tcp[2]) };
  throw new Error(`--endpoint must be unix:///path/to.sock or tcp://host:port, got "${endpoint}"`);
}

/** Serve the CSI services with the gRPC protocol (what kubelet and the sidecars speak). */
export async function serveCsi(endpoint: string, services: CsiServices, log: Logger, interceptors: Interceptor[] = []): Promise<CsiServer> {
  const where = parseEndpoint(endpoint);
  const handler = connectNodeAdapter({
    routes: (router) => {
      router.service(Identity, services.identity);
      if (services.controller) router.service(Controller, services.controller);
      if (services.node) router.service(Node, services.node);
    },
    grpcWeb: false,
    connect: false,
    interceptors,
  });
  const server = http2.createServer(handler);
  if ("path" in where) {
    fs.mkdirSync(dirname(where.path), { recursive: true });
    try {
      // A socket left by an earlier run is replaced; anything else there is not ours to delete.
      if (!fs.lstatSync(where.path).isSocket()) throw new Error(`${where.path} exists and is not a socket`);
      fs.unlinkSync(where.path);
    } catch (e) {
      if (errnoOf(e) !== E.ENOENT) throw e;
    }
  }
  await new Promise<void>((res, rej) => {
    server.once("error", (e: NodeJS.ErrnoException) => rej(new Error(`cannot listen on ${endpoint}: ${e.code ?? e.message}`)));
    if ("path" in where) server.listen(where.path, () => res());
    else server.listen(where.port, where.host, () => res());
  });
  log.info({ endpoint }, "serving CSI");
  return {
    close: () =>
      new Promise<void>((res) => {
        server.close(() => res());
        if ("path" in where) fs.rmSync(where.path, { force: true });
      }),
  };
}
