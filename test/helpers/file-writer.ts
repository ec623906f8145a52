/**
 * Run as a program: writes files `${tag}-0`, `${tag}-1`, … into dir, one after another, until stopFile
 * exists; for each, one line on stdout: `name errno ms` (writeClosed's answer). Imported: fileData,
 * the bytes of each file, and writeClosed.
 */
import * as fs from "node:fs";
import { createHash } from "node:crypto";
import { join } from "node:path";
import { closeFd } from "./libc.ts";

/** The bytes written as `${tag}-${i}`: a length and content of their own. */
export function fileData(tag: string, i: number): Buffer {
  const seed = createHash("sha256").update(`${tag}-${i}`).digest();
  const out = Buffer.allocUnsafe(1 + ((i * 7919) % 65536));
  for (let k = 0; k < out.length; k += seed.length) seed.copy(out, k);
  return out;
}

/**
 * Write data into a new or emptied file at path and close it: 0 when its open, write and close all
 * succeeded, else the errno ("short" for a write that wrote less). The close is libc's: Bun's
 * closeSync and writeFile drop its error, which is where a filesystem reports a publish that failed.
 */
export function writeClosed(path: string, data: Uint8Array): number | "short" {
  let fd: number;
  try {
    fd = fs.openSync(path, "w");
  } catch (e) {
    return -((e as NodeJS.ErrnoException).errno ?? -5);
  }
  let errno: number | "short" = 0;
  try {
    if (fs.writeSync(fd, data) !== data.length) errno = "short";
  } catch (e) {
    errno = -((e as NodeJS.ErrnoException).errno ?? -5);
  }
  const closed = closeFd(fd);
  return errno || closed;
}

if (import.meta.main) {
  const [dir, tag, stopFile] = process.argv.slice(2) as [string, string, string];
  for (let i = 0; !fs.existsSync(stopFile); i++) {
    const name = `${tag}-${i}`;
    const t0 = Date.now();
    const errno = writeClosed(join(dir, name), fileData(tag, i));
    process.stdout.write(`${name} ${errno} ${Date.now() - t0}\n`);
  }
}
