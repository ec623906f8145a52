import * as http from "node:http";
import { listenFailure } from "../util/errno.ts";
import type { Registry } from "prom-client";
import type { Logger } from "../util/log.ts";

export interface MetricsServer {
  readonly port: number;
  close(): Promise<void>;
}

/** Prometheus text format on http://<host>:<port>/metrics, listening on host only. */
export async function serveMetrics(registry: Registry, host: string, port: number, log: Logger, refresh?: () => Promise<void>): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    if (req.url !== "/metrics" && req.url?.split("?")[0] !== "/metrics") {
      res.writeHead(404, { "content-type": "text/plain" }).end("metrics are at /metrics\n");
      return;
    }
    (refresh?.() ?? Promise.resolve()).then(() => registry.metrics()).then(
      (text) => res.writeHead(200, { "content-type": registry.contentType }).end(text),
      (e: unknown) => res.writeHead(500, { "content-type": "text/plain" }).end(`${(e as Error).message}\n`),
    );
  });
  await new Promise<void>((res, rej) => {
    server.once("error", (e: NodeJS.ErrnoException) => rej(new Error(`cannot serve metrics on ${host}:${port}: ${listenFailure(e)}`)));
    server.listen(port, host, () => res());
  });
  const a = server.address();
  const bound = typeof a === "object" && a ? a.port : port;
  log.info({ host, port: bound }, "serving metrics at /metrics");
  return { port: bound, close: () => new Promise<void>((res) => server.close(() => res())) };
}
