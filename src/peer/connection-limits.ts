import type { Server } from "node:net";
import type { Socket } from "node:net";

export interface ConnectionLimits {
  /** Open connections from one remote address (several nodes may share a machine, a NAT or a test host). */
  perAddress: number;
  /** Open connections in all: every node holds one to each other node it reads from. */
  total: number;
  /** A connection that has carried no member's call by then is closed. */
  proveWithinMs: number;
}

export interface ConnectionGuard {
  /** The connection from address:port carried a member's call: it is kept, and never evicted. */
  proven(address: string | undefined, port: number | undefined): void;
}

/**
 * Bound what connections can cost before their callers prove membership. Every connection is on
 * probation until it carries a member's call (see peer-gate.ts), and is closed if it has not within
 * proveWithinMs. Over a limit, the oldest connection still on probation makes room — from that
 * address, or from any — so connections that never send anything cannot keep members out; only when
 * every connection is a member's is a new one refused.
 */
export function limitConnections(server: Server, limits: ConnectionLimits, onRefused: (remote: string, why: string) => void): ConnectionGuard {
  const byAddress = new Map<string, number>();
  let total = 0;
  /** Connections on probation, oldest first (Map order), by "address:port". */
  const probation = new Map<string, { socket: Socket; timer: ReturnType<typeof setTimeout> }>();
  const keyOf = (address: string | undefined, port: number | undefined) => `${address ?? "?"}:${port ?? 0}`;
  // Once HTTP/2 has the socket, destroy() (and the session's) leaves the connection open on Bun; a
  // reset closes it.
  const close = (socket: Socket) => (socket.resetAndDestroy ? socket.resetAndDestroy() : socket.destroy());

  const evict = (from?: string): boolean => {
    for (const [key, p] of probation) {
      if (from !== undefined && p.socket.remoteAddress !== from) continue;
      probation.delete(key);
      clearTimeout(p.timer);
      close(p.socket);
      return true;
    }
    return false;
  };

  server.on("connection", (socket: Socket) => {
    const remote = socket.remoteAddress ?? "?";
    if ((byAddress.get(remote) ?? 0) >= limits.perAddress && !evict(remote)) {
      socket.destroy();
      return onRefused(remote, `${limits.perAddress} connections open from ${remote}, all of members`);
    }
    if (total >= limits.total && !evict()) {
      socket.destroy();
      return onRefused(remote, `${limits.total} connections open in all, all of members`);
    }
    total++;
    byAddress.set(remote, (byAddress.get(remote) ?? 0) + 1);
    const key = keyOf(socket.remoteAddress, socket.remotePort);
    const timer = setTimeout(() => {
      if (!probation.delete(key)) return;
      close(socket);
      onRefused(remote, `no member's call within ${limits.proveWithinMs} ms`);
    }, limits.proveWithinMs);
    timer.unref?.();
    probation.set(key, { socket, timer });
    socket.once("close", () => {
      const p = probation.get(key);
      if (p?.socket === socket) {
        clearTimeout(p.timer);
        probation.delete(key);
      }
      total--;
      const left = (byAddress.get(remote) ?? 1) - 1;
      if (left > 0) byAddress.set(remote, left);
      else byAddress.delete(remote);
    });
  });

  return {
    proven(address, port) {
      const key = keyOf(address, port);
      const p = probation.get(key);
      if (!p) return;
      clearTimeout(p.timer);
      probation.delete(key);
    },
  };
}
