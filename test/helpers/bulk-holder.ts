import * as net from "node:net";
import type { AddressInfo } from "node:net";
import { parseRequest, type BulkRequest } from "../../src/peer/bulk-protocol.ts";

export interface RawHolder {
  address: string;
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

/**
 * A stand-in holder on a real socket that answers each bulk request with the raw bytes answer gives
 * for it (nth: its count on its connection, from 0); "close": the connection is destroyed instead;
 * undefined: nothing, the connection left open.
 */
export async function rawHolder(answer: (request: BulkRequest, nth: number) => Buffer | "close" | undefined): Promise<RawHolder> {
  const sockets = new Set<net.Socket>();
  let accepted = 0;
  const server = net.createServer((sock) => {
    accepted++;
    sockets.add(sock);
    sock.on("error", () => {});
    let nth = 0;
    let buf = Buffer.alloc(0);
    sock.on("data", (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      const p = parseRequest(buf);
      if (!("request" in p)) return;
      buf = buf.subarray(p.used);
      const out = answer(p.request, nth++);
      if (out === "close") sock.destroy();
      else if (out) sock.write(out);
    });
  });
  await new Promise<void>((res) => server.listen(0, "127.0.0.1", () => res()));
  return {
    address: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    connections: () => accepted,
    close: async () => {
      for (const sock of sockets) sock.destroy();
      await new Promise<void>((res) => server.close(() => res()));
    },
  };
}
