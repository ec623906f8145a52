import type { Server } from "node:net";
import type { Socket } from "node:net";

export interface ConnectionLimits {
  /** Open connections from one remote address (several nodes may share a machine, a NAT or a test host). */
  perAddress: number;
  /** Open connections in all: every node holds one to each other node it reads from. */
  total: number;
}

/**
 * Close new connections over the limits at once, before TLS or HTTP/2 spend anything on them;
 * onRefused hears each (to log it without flooding).
 */
export function limitConnections(server: Server, limits: ConnectionLimits, onRefused: (remote: string, why: string) => void): void {
  const byAddress = new Map<string, number>();
  let total = 0;
  server.on("connection", (socket: Socket) => {
    const remote = socket.remoteAddress ?? "?";
    const mine = byAddress.get(remote) ?? 0;
    const why = total >= limits.total ? `${limits.total} connections open in all` : mine >= limits.perAddress ? `${limits.perAddress} connections open from ${remote}` : undefined;
    if (why) {
      socket.destroy();
      onRefused(remote, why);
      return;
    }
    total++;
    byAddress.set(remote, mine + 1);
    socket.once("close", () => {
      total--;
      const left = (byAddress.get(remote) ?? 1) - 1;
      if (left > 0) byAddress.set(remote, left);
      else byAddress.delete(remote);
    });
  });
}
