import { dlopen, FFIType, read } from "bun:ffi";
import { errnoName, FsError } from "../util/errno.ts";

const SEEK_DATA = 3, SEEK_HOLE = 4, ENXIO = 6;

let libc: ReturnType<typeof load> | undefined;
const load = () =>
  dlopen("libc.so.6", {
    lseek: { args: [FFIType.i32, FFIType.i64, FFIType.i32], returns: FFIType.i64_fast },
    __errno_location: { args: [], returns: FFIType.ptr },
  }).symbols;

function seek(fd: number, from: number, whence: number): number | undefined {
  const c = (libc ??= load());
  const at = Number(c.lseek(fd, from, whence));
  if (at >= 0) return at;
  const errno = read.i32(c.__errno_location()!, 0);
  if (errno === ENXIO) return undefined;
  throw new FsError(errno, `lseek of fd ${fd} from ${from} for ${whence === SEEK_DATA ? "data" : "a hole"}: ${errnoName(errno)}`);
}

/**
 * Where the file of fd stores bytes (not a hole) from offset from on, and where that run ends; undefined
 * when only holes are left. A filesystem that keeps no holes has one run to the end of the file.
 */
export function dataRun(fd: number, from: number): { start: number; end: number } | undefined {
  const start = seek(fd, from, SEEK_DATA);
  if (start === undefined) return undefined;
  // Every file ends in a hole (its end counts as one): found whenever data was.
  const end = seek(fd, start, SEEK_HOLE);
  if (end === undefined) throw new FsError(ENXIO, `fd ${fd}: no end after data at ${start}`);
  return { start, end };
}
