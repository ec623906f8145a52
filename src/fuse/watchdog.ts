import { spawn } from "bun";
import { embeddedFd } from "../util/embedded-lib.ts";
import watchdogPath from "../../native/build/mcfs-watchdog" with { type: "file" };

/**
 * Start native/watchdog.c for this process's FUSE connection conn: it aborts the connection if this
 * process is ever killed while the kernel holds it there, so that it can die. It ends with this process.
 */
export function startWatchdog(conn: number): void {
  // The memfd stays open: the new process finds the program by this process's path to it.
  const fd = embeddedFd(watchdogPath, "mcfs-watchdog");
  spawn([`/proc/${process.pid}/fd/${fd}`, String(process.pid), String(conn)], { stdio: ["ignore", "ignore", "inherit"] }).unref();
}
