import { dlopen, FFIType, read } from "bun:ffi";
import { cstr } from "../util/c-string.ts";
import { readFileSync } from "node:fs";
import { errnoName } from "../util/errno.ts";
import type { BindOption, Mounter, MountEntry } from "./mounter.ts";

const MS_RDONLY = 1, MS_NOSUID = 2, MS_NODEV = 4, MS_NOEXEC = 8, MS_REMOUNT = 32, MS_NOATIME = 1024, MS_NODIRATIME = 2048, MS_BIND = 4096;
const MS_RELATIME = 1 << 21, MS_STRICTATIME = 1 << 24, MNT_DETACH = 2;

const FLAG: Record<BindOption, number> = {
  ro: MS_RDONLY, noexec: MS_NOEXEC, noatime: MS_NOATIME, nodiratime: MS_NODIRATIME, relatime: MS_RELATIME, strictatime: MS_STRICTATIME,
};

let libc: ReturnType<typeof open> | undefined;
function open() {
  const { ptr: P, i32, u64 } = FFIType;
  return dlopen("libc.so.6", {
    mount: { args: [P, P, P, u64, P], returns: i32 },
    umount2: { args: [P, i32], returns: i32 },
    __errno_location: { args: [], returns: P },
  });
}

/** mountinfo escapes space, tab, newline and backslash as octal. */
const unescape = (s: string) => s.replace(/\\([0-7]{3})/g, (_, o: string) => String.fromCharCode(parseInt(o, 8)));

export function parseMountinfo(text: string): MountEntry[] {
  const out: MountEntry[] = [];
  for (const line of text.split("\n")) {
    if (!line) continue;
    const [pre, post] = line.split(" - ");
    const f = (pre ?? "").split(" ");
    const g = (post ?? "").split(" ");
    if (f.length < 6 || !g[0]) continue;
    out.push({ id: Number(f[0]), dev: f[2]!, root: unescape(f[3]!), mountPoint: unescape(f[4]!), options: f[5]!.split(","), fstype: g[0], source: unescape(g[1] ?? "") });
  }
  return out;
}

/** Mounts through libc (mount(2), umount2(2)): no mount binary needed in the image. */
export function createLinuxMounter(): Mounter {
  libc ??= open();
  const lc = libc.symbols;
  const check = (rc: number, what: string) => {
    if (rc === 0) return;
    const errno = read.i32(lc.__errno_location()!, 0);
    const e = new Error(`${what}: ${errnoName(errno)}`) as Error & { errno: number; code: string };
    e.errno = errno;
    e.code = errnoName(errno);
    throw e;
  };
  return {
    bind(source, target) {
      check(lc.mount(cstr(source), cstr(target), null, MS_BIND, null), `bind mount of ${source} on ${target}`);
    },
    restrict(target, options) {
      // A bind remount sets the per-mount flags to exactly these: nosuid,nodev must be named every time.
      const flags = options.reduce((f, o) => f | FLAG[o], MS_BIND | MS_REMOUNT | MS_NOSUID | MS_NODEV);
      check(lc.mount(null, cstr(target), null, flags, null), `remount of ${target} with ${["nosuid", "nodev", ...options].join(",")}`);
    },
    unmount(target, lazy) {
      check(lc.umount2(cstr(target), lazy ? MNT_DETACH : 0), `unmount of ${target}`);
    },
    mounts() {
      return parseMountinfo(readFileSync("/proc/self/mountinfo", "utf8"));
    },
  };
}
