import { dlopen, FFIType, toArrayBuffer } from "bun:ffi";

const { i32, ptr: P, u64, i64, u32 } = FFIType;
const lib = dlopen("libc.so.6", {
  renameat2: { args: [i32, P, i32, P, u32], returns: i32 },
  setxattr: { args: [P, P, P, u64, i32], returns: i32 },
  getxattr: { args: [P, P, P, u64], returns: i64 },
  listxattr: { args: [P, P, u64], returns: i64 },
  removexattr: { args: [P, P], returns: i32 },
  getdents64: { args: [i32, P, u64], returns: i64 },
  lseek: { args: [i32, i64, i32], returns: i64 },
  close: { args: [i32], returns: i32 },
  __errno_location: { args: [], returns: P },
});

const AT_FDCWD = -100;
const c = (s: string) => Buffer.from(s + "\0");

function errno(): number {
  const p = lib.symbols.__errno_location();
  return new Int32Array(toArrayBuffer(p!, 0, 4))[0]!;
}

/** Close fd; returns 0 or the errno (Bun's closeSync drops a failed close's error, a flush's among them). */
export function closeFd(fd: number): number {
  return lib.symbols.close(fd) === 0 ? 0 : errno();
}

/** Returns 0 or the errno. */
export function renameat2(from: string, to: string, flags: number): number {
  return lib.symbols.renameat2(AT_FDCWD, c(from), AT_FDCWD, c(to), flags) === 0 ? 0 : errno();
}

export function setxattr(path: string, name: string, value: Uint8Array, flags = 0): number {
  return lib.symbols.setxattr(c(path), c(name), value.length ? value : null, value.length, flags) === 0 ? 0 : errno();
}

export function getxattr(path: string, name: string): Uint8Array | number {
  const buf = new Uint8Array(65536);
  const n = Number(lib.symbols.getxattr(c(path), c(name), buf, buf.length));
  return n < 0 ? errno() : buf.slice(0, n);
}

export function listxattr(path: string): string[] | number {
  const buf = new Uint8Array(65536);
  const n = Number(lib.symbols.listxattr(c(path), buf, buf.length));
  if (n < 0) return errno();
  return new TextDecoder().decode(buf.subarray(0, n)).split("\0").filter(Boolean);
}

export function removexattr(path: string, name: string): number {
  return lib.symbols.removexattr(c(path), c(name)) === 0 ? 0 : errno();
}

/** The names getdents64 gives for an open directory fd (read to its end), as a program reading a directory it opened earlier sees them. */
/** lseek(fd, 0, SEEK_SET): what rewinddir does to a directory. */
export function rewindFd(fd: number): void {
  if (Number(lib.symbols.lseek(fd, 0, 0)) < 0) throw new Error(`lseek: errno ${errno()}`);
}

export function readDirFd(fd: number): string[] {
  const buf = new Uint8Array(4096);
  const view = new DataView(buf.buffer);
  const names: string[] = [];
  for (;;) {
    const n = Number(lib.symbols.getdents64(fd, buf, buf.length));
    if (n < 0) throw new Error(`getdents64: errno ${errno()}`);
    if (n === 0) return names;
    for (let o = 0; o < n; o += view.getUint16(o + 16, true)) {
      const name = buf.subarray(o + 19, buf.indexOf(0, o + 19));
      names.push(new TextDecoder().decode(name));
    }
  }
}
