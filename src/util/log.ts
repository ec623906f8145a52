import pino from "pino";

export type Logger = pino.Logger;

/**
 * Structured logs: JSON lines when stderr is not a terminal (collectors read them), pretty lines on a
 * terminal. Secrets never go in: redact URLs' passwords before logging them (see redactUrl).
 */
export function createLogger(opts: { debug?: boolean; name?: string } = {}): Logger {
  const level = opts.debug ? "debug" : (process.env.MCFS_LOG_LEVEL ?? "info");
  const base = { name: opts.name ?? "mcfs" };
  if (process.stderr.isTTY) {
    const pretty = require("pino-pretty") as (o: object) => NodeJS.WritableStream;
    return pino({ level, base }, pretty({ destination: 2, colorize: true, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname" }) as pino.DestinationStream);
  }
  return pino({ level, base, timestamp: pino.stdTimeFunctions.isoTime }, pino.destination({ dest: 2, sync: true }));
}

/** A Redis or peer URL with any password replaced, fit for logs and error messages. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return url.replace(/\/\/([^:@/]*):[^@/]*@/, "//$1:***@");
  }
}
