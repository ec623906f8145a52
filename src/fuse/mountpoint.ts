import { readFileSync, readdirSync, statSync, statfsSync, mkdirSync } from "node:fs";
import { dlopen, FFIType, read } from "bun:ffi";
import { cstr } from "../util/c-string.ts";
import { fusermountUnmount, isRoot } from "./fusermount.ts";
import { errnoName } from "../util/errno.ts";

export interface MountInfo {
  mountPoint: string;
  fsType: string;
  source: string;
  /** Device minor: the FUSE connection id under /sys/fs/fuse/connections. */
  minor: number;
}

function unescape(s: string): string {
  return s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));
}

export function readMounts(): MountInfo[] {
  const out: MountInfo[] = [];
  for (const line of readFileSync("/proc/self/mountinfo", "utf8").split("\n")) {
    if (!line) continue;
    const [pre, post] = line.split(" - ");
    const f = pre!.split(" ");
    const g = (post ?? "").split(" ");
    out.push({ mountPoint: unescape(f[4]!), fsType: g[0]!, source: unescape(g[1] ?? ""), minor: Number(f[2]!.split(":")[1]) });
  }
  return out;
}

export function findMount(path: string): MountInfo | undefined {
  return readMounts().filter((m) => m.mountPoint === path).at(-1);
}

let libc: ReturnType<typeof openLibc> | undefined;
function openLibc() {
  return dlopen("libc.so.6", {
    umount2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 },
    __errno_location: { args: [], returns: FFIType.ptr },
  });
}

const MNT_DETACH = 2;

/**
 * Lazily unmount path (it goes at once, also with files open in it): umount2 as root; any other user
 * may not call umount2, so fusermount3 does it for them (their own mounts only). Throws with the reason.
 */
export function detachMount(path: string): void {
  if (!isRoot()) return fusermountUnmount(path);
  libc ??= openLibc();
  if (libc.symbols.umount2(cstr(path), MNT_DETACH) !== 0) throw new Error(`could not unmount ${path}: umount2 failed with ${errnoName(read.i32(libc.symbols.__errno_location()!, 0))}`);
}

/** Whether the FUSE mount with this connection id is still at path. */
export function stillMounted(path: string, minor: number): boolean {
  return readMounts().some((m) => m.mountPoint === path && m.minor === minor && m.fsType.startsWith("fuse"));
}

/**
 * Make path ready to be mounted on: created if missing; a dead FUSE mount left by a crashed run
 * (stat fails with ENOTCONN) is lazily unmounted. A live mount of anything else is refused, and so is
 * a directory with something in it unless nonempty: the mount would hide it until unmounted.
 */
export function prepareMountpoint(path: string, nonempty: boolean): { made: boolean } {
  let made = false;
  for (let i = 0; i < 8; i++) {
    let st;
    try {
      // statfs always reaches a FUSE daemon (stat may be answered from attributes the kernel cached):
      // a dead one answers ENOTCONN.
      statfsSync(path);
      st = statSync(path);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === "ENOENT") {
        mkdirSync(path, { recursive: true });
        made = true;
        continue;
      }
      if (code === "ENOTCONN" || code === "ECONNABORTED") {
        try {
          detachMount(path);
        } catch (u) {
          throw new Error(`mount point ${path} is a dead FUSE mount left by a crashed daemon, and ${(u as Error).message}`);
        }
        continue;
      }
      throw new Error(`mount point ${path}: ${(e as Error).message}`);
    }
    if (!st.isDirectory()) throw new Error(`mount point ${path} is not a directory`);
    const m = findMount(path);
    if (m && m.fsType.startsWith("fuse")) throw new Error(`mount point ${path} is already a live FUSE mount (${m.source}); stop that daemon or unmount it first`);
    const inside = readdirSync(path);
    if (inside.length && !nonempty)
      throw new Error(`mount point ${path} is not empty (${inside.length} entries, e.g. ${JSON.stringify(inside[0])}): mcfs would hide them while mounted; empty it, choose another, or pass --nonempty`);
    return { made };
  }
  throw new Error(`mount point ${path}: could not clear a stale mount`);
}
