import * as fs from "node:fs";
import { O_PATH } from "../util/file-mode.ts";

/** Open for naming only: no read or write, yet mountable, unmountable and a base for lookups. */
const { O_NOFOLLOW, O_DIRECTORY } = fs.constants;

/** The procfs magic link of fd: a path that means exactly the object fd names, looked up by nobody. */
export const fdPath = (fd: number): string => `/proc/self/fd/${fd}`;

/** A directory given by the operator (its own path may hold symlinks, e.g. /var/lib/kubelet on another disk). */
export const openDirPath = (path: string): number => fs.openSync(path, O_PATH | O_DIRECTORY);

/** The directory `name` right inside dirFd; a symlink there fails (ENOTDIR), it is never followed. */
export const openDirAt = (dirFd: number, name: string): number => fs.openSync(`${fdPath(dirFd)}/${name}`, O_PATH | O_NOFOLLOW | O_DIRECTORY);

/** Id of the mount fd is on (mountinfo's first field). */
export function mountIdOf(fd: number): number {
  const m = /^mnt_id:\s*(\d+)$/m.exec(fs.readFileSync(`/proc/self/fdinfo/${fd}`, "utf8"));
  if (!m) throw new Error(`no mnt_id in /proc/self/fdinfo/${fd}`);
  return Number(m[1]);
}

/** Run fn with a list it adds descriptors to; all are closed afterwards, however fn ends. */
export function withFds<T>(fn: (keep: (fd: number) => number) => T): T {
  const open: number[] = [];
  try {
    return fn((fd) => (open.push(fd), fd));
  } finally {
    for (const fd of open) fs.closeSync(fd);
  }
}
