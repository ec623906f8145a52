import { Code, ConnectError } from "@connectrpc/connect";
import type { Logger } from "../util/log.ts";

/** A request field that is missing or wrong: InvalidArgument naming it. */
export function invalid(field: string, why = "is required"): ConnectError {
  return new ConnectError(`${field} ${why}`, Code.InvalidArgument);
}

export function csiError(code: Code, message: string): ConnectError {
  return new ConnectError(message, code);
}

/**
 * Wrap a CSI method: gRPC errors pass as they are; anything else is logged with the method and
 * answered Internal with its message only (never a stack trace).
 */
export function guard<Req, Res>(log: Logger, method: string, fn: (req: Req) => Promise<Res>): (req: Req) => Promise<Res> {
  return async (req) => {
    try {
      return await fn(req);
    } catch (e) {
      if (e instanceof ConnectError) {
        if (e.code !== Code.NotFound && e.code !== Code.InvalidArgument) log.warn({ method, code: Code[e.code], err: e.rawMessage }, "CSI call failed");
        throw e;
      }
      log.error({ method, err: (e as Error).message }, "CSI call failed");
      throw new ConnectError(`${method}: ${(e as Error).message}`, Code.Internal);
    }
  };
}

/** Operations in flight by key (volume id, target path): a second call on a busy key is Aborted. */
export interface OpLocks {
  run<T>(keys: string[], fn: () => Promise<T>): Promise<T>;
}

export function createOpLocks(): OpLocks {
  const busy = new Set<string>();
  return {
    async run(keys, fn) {
      const taken = keys.find((k) => busy.has(k));
      if (taken !== undefined) throw new ConnectError(`an operation on ${taken} is already in progress`, Code.Aborted);
      for (const k of keys) busy.add(k);
      try {
        return await fn();
      } finally {
        for (const k of keys) busy.delete(k);
      }
    },
  };
}
