import cliProgress from "cli-progress";
import type { Logger } from "./log.ts";

/** Progress of a long operation: a bar on a terminal, a line every few seconds otherwise. */
export interface Progress {
  update(done: number, total: number): void;
  stop(): void;
}

const LINE_EVERY_MS = 5000;

/** counting: the total is not known (a count, no bar). */
export function createProgress(label: string, log: Logger, counting = false, tty = process.stderr.isTTY === true): Progress {
  if (tty) {
    const format = counting ? `${label}: {value}` : `${label} [{bar}] {value}/{total} ({percentage}%) {eta_formatted} left`;
    const bar = new cliProgress.SingleBar({ format, stream: process.stderr, hideCursor: true, etaBuffer: 50 }, cliProgress.Presets.shades_classic);
    let started = false;
    return {
      update(done, total) {
        if (!started) bar.start(Math.max(total, done), done);
        started = true;
        bar.setTotal(Math.max(total, done));
        bar.update(done);
      },
      stop() {
        if (started) bar.stop();
      },
    };
  }
  let last = Date.now();
  let latest: [number, number] = [0, 0];
  return {
    update(done, total) {
      latest = [done, total];
      if (Date.now() - last < LINE_EVERY_MS) return;
      last = Date.now();
      log.info(counting ? { done } : { done, total }, `${label}…`);
    },
    stop() {
      if (latest[0]) log.info({ done: latest[0] }, `${label}: done`);
    },
  };
}
