import { readFileSync, statSync, statfsSync, mkdirSync } from "node:fs";
import { dlopen, FFIType, ptr } from "bun:ffi";

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
  return dlopen("libc.so.6", { umount2: { args: [FFIType.ptr, FFIType.i32], returns: FFIType.i32 } });
}

const MNT_DETACH = 2;

/** Lazily unmount path. Returns true when something was unmounted. */
export function lazyUnmount(path: string): boolean {
  libc ??= openLibc();
  return libc.symbols.umount2(ptr(Buffer.from(path + "\0")), MNT_DETACH) === 0;
}

/**
 * Make path ready to be mounted on: created if missing; a dead FUSE mount left by a crashed run
 * (stat fails with ENOTCONN) is lazily unmounted. A live mount of anything else is refused.
 */
export function prepareMountpoint(path: string): void {
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
        continue;
      }
      if (code === "ENOTCONN" || code === "ECONNABORTED") {
        lazyUnmount(path);
        continue;
      }
      throw new Error(`mount point ${path}: ${(e as Error).message}`);
    }
    if (!st.isDirectory()) throw new Error(`mount point ${path} is not a directory`);
    const m = findMount(path);
    if (m && m.fsType.startsWith("fuse")) throw new Error(`mount point ${path} is already a live FUSE mount (${m.source}); stop that daemon or unmount it first`);
    return;
  }
  throw new Error(`mount point ${path}: could not clear a stale mount`);
}
