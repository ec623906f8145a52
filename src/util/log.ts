import pino from "pino";
import PinoPretty from "pino-pretty";

export type Logger = pino.Logger;

export const LOG_FORMATS = ["auto", "json", "pretty"] as const;
/** auto: pretty lines when stderr is a terminal, JSON lines otherwise (collectors read them). */
export type LogFormat = (typeof LOG_FORMATS)[number];

/**
 * Structured logs on stderr. Both streams write synchronously: a fatal error is logged just before
 * process.exit, which drops whatever an asynchronous stream still buffers. pino-pretty runs in-process,
 * not as pino's worker-thread transport, which cannot load its target from inside the compiled binary.
 * Secrets never go in: redact URLs' passwords before logging them (see redactUrl).
 */
export function createLogger(opts: { debug?: boolean; name?: string; format?: LogFormat } = {}): Logger {
  const level = opts.debug ? "debug" : (process.env.MCFS_LOG_LEVEL ?? "info");
  const base = { name: opts.name ?? "mcfs" };
  const format = opts.format ?? "auto";
  if (format === "pretty" || (format === "auto" && process.stderr.isTTY)) {
    const colorize = process.stderr.isTTY === true;
    return pino({ level, base }, PinoPretty({ destination: 2, sync: true, colorize, translateTime: "SYS:HH:MM:ss.l", ignore: "pid,hostname" }));
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
