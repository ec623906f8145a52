import { dlopen, FFIType, ptr } from "bun:ffi";
import * as fs from "node:fs";

/**
 * Settings of the runtime the daemon runs with, unless the user set them:
 * - MIMALLOC_PURGE_DELAY: how long Bun's allocator (mimalloc) keeps pages freed in a burst before
 *   giving them back to the kernel. Its default (10 ms) gives them back between one buffer and the
 *   next: each 128 KiB chunk a peer streams then faults its pages in again and each give-back costs a
 *   TLB shootdown; kept for a second, a cross-node copy of 1 GiB took 1.8x less time and ~45% less
 *   CPU here (.prof/big.ts). Idle for a second, the memory still goes back.
 * - MIMALLOC_PURGE_HOLES_MIN_INTERVAL: Bun's mimalloc also gives back the free ranges inside pages
 *   still in use ("holes"), and does so at once whatever the purge delay: the 512 KiB buffers a
 *   socket read hands JavaScript, and the chunks a holder reads to send, were faulted in afresh each
 *   time. Once a second at most: a cross-node copy of 200 files of 2.2 MB faulted about 5 thousand pages
 *   instead of 28-35 thousand, took a third less CPU on both nodes and ran 20-40% faster
 *   (.prof/fetch.sh), and idle for a second the memory went back as before.
 * - BUN_JSC_useFTLJIT: JavaScriptCore's last tier (FTL) compiles for long on other threads, and a
 *   daemon whose JavaScript mostly hands requests on gains little from it: without it, daemon CPU
 *   was lower or the same in every case measured here (a third less in the seconds after a start,
 *   when the compiler threads took a third of it; the workflow, creates and a 1 GiB read at the
 *   same speed or better).
 * - BUN_JSC_useWarmUpMarkedBlocks: a thread that faults the garbage collector's blocks in ahead of
 *   the allocator. The faults are the same on another thread, and on two cores it took a tenth of the
 *   CPU in the seconds after a start (stats after a remount: 39 against 48 us of daemon CPU each).
 */
const SETTINGS: readonly (readonly [string, string])[] = [
  ["MIMALLOC_PURGE_DELAY", "1000"],
  ["MIMALLOC_PURGE_HOLES_MIN_INTERVAL", "1000"],
  ["BUN_JSC_useFTLJIT", "false"],
  ["BUN_JSC_useWarmUpMarkedBlocks", "false"],
];

/**
 * They are read when the process starts: unless every one is set already (by the user, or by the
 * run before this one), the binary runs itself again with the missing ones set. execve keeps the
 * PID (what started the daemon still tracks it), the arguments and the open descriptors. Should
 * execve fail, this run goes on with the defaults.
 */
export function applyRuntimeSettings(): void {
  const missing = SETTINGS.filter(([k]) => process.env[k] === undefined);
  if (!missing.length || process.platform !== "linux") return;
  // The bytes the process was given, as given (process.env decodes them as UTF-8).
  const strings = (file: string) => fs.readFileSync(file, "latin1").split("\0").slice(0, -1);
  let args: string[], vars: string[];
  try {
    args = strings("/proc/self/cmdline");
    vars = strings("/proc/self/environ");
  } catch {
    return;
  }
  const cstr = (s: string) => Buffer.from(`${s}\0`, "latin1");
  const env = [...vars, ...missing.map(([k, v]) => `${k}=${v}`)].map(cstr);
  const argv = args.map(cstr);
  const table = (bufs: Buffer[]) => {
    const t = new BigUint64Array(bufs.length + 1);
    bufs.forEach((b, i) => (t[i] = BigInt(ptr(b))));
    return t;
  };
  const argvTable = table(argv), envTable = table(env);
  // By its path, so the process keeps its name (an exec of /proc/self/exe would be called "exe").
  let path = "/proc/self/exe";
  try {
    const real = fs.readlinkSync(path);
    if (!real.endsWith(" (deleted)")) path = real;
  } catch {
    // /proc/self/exe it is.
  }
  const exe = cstr(path);
  try {
    const libc = dlopen("libc.so.6", { execve: { args: [FFIType.ptr, FFIType.ptr, FFIType.ptr], returns: FFIType.i32 } });
    libc.symbols.execve(ptr(exe), ptr(argvTable), ptr(envTable));
    libc.close();
  } catch {
    // No libc to call: the default stays.
  }
}
