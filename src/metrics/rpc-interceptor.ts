import { Code, ConnectError, type Interceptor } from "@connectrpc/connect";

/** Calls observed by method, with their gRPC code and time; a stream is timed to its end. */
export function observeRpcs(observe: (method: string, code: string, seconds: number) => void): Interceptor {
  return (next) => async (req) => {
    const t0 = performance.now();
    const done = (e?: unknown) => observe(req.method.name, e === undefined ? "OK" : Code[ConnectError.from(e).code] ?? "Unknown", (performance.now() - t0) / 1000);
    let res;
    try {
      res = await next(req);
    } catch (e) {
      done(e);
      throw e;
    }
    if (!res.stream) {
      done();
      return res;
    }
    const inner = res.message;
    async function* timed() {
      try {
        yield* inner;
      } catch (e) {
        done(e);
        throw e;
      }
      done();
    }
    return { ...res, message: timed() };
  };
}
