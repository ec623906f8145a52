import type { Interceptor } from "@connectrpc/connect";
import { createMetrics } from "../metrics/metrics.ts";
import { observeRpcs } from "../metrics/rpc-interceptor.ts";
import { serveMetrics } from "../metrics/metrics-server.ts";
import type { Logger } from "../util/log.ts";

/** CSI calls counted and timed by method and code, served on port (no port: nothing). */
export async function csiMetrics(port: number | undefined, host: string, log: Logger): Promise<{ interceptors: Interceptor[]; close(): Promise<void> }> {
  if (port === undefined) return { interceptors: [], close: async () => {} };
  const m = createMetrics();
  const server = await serveMetrics(m.registry, host, port, log);
  const interceptor = observeRpcs((method, code, s) => {
    m.csiCalls.inc({ method, code });
    m.csiLatency.observe({ method }, s);
  });
  return { interceptors: [interceptor], close: () => server.close() };
}
