import { FFIType } from "bun:ffi";
import libPath from "../../native/build/mcfs_beneath.so" with { type: "file" };
import { loadEmbedded } from "../util/embedded-lib.ts";

const { i32, u32, i64, f64, ptr: P } = FFIType;

const symbols = {
  mcfs_open_root: { args: [P], returns: i32 },
  mcfs_openat_beneath: { args: [i32, P, i32, i32], returns: i32 },
  mcfs_open_regular_beneath: { args: [i32, P, i32, i32], returns: i32 },
  mcfs_open_cached_beneath: { args: [i32, P, i32], returns: i32 },
  mcfs_mkdirat_beneath: { args: [i32, P, i32], returns: i32 },
  mcfs_unlinkat_beneath: { args: [i32, P, i32], returns: i32 },
  mcfs_symlinkat_beneath: { args: [i32, P, P], returns: i32 },
  mcfs_fchownat_beneath: { args: [i32, P, u32, u32], returns: i32 },
  mcfs_utimensat_beneath: { args: [i32, P, i64, i64, i64, i64], returns: i32 },
  mcfs_readlinkat_beneath: { args: [i32, P, P, i32], returns: i32 },
  mcfs_renameat_beneath: { args: [i32, P, P, u32], returns: i32 },
  mcfs_linkat_beneath: { args: [i32, P, P], returns: i32 },
  mcfs_futimens: { args: [i32, i64, i64, i64, i64], returns: i32 },
  mcfs_fsetxattr: { args: [i32, P, P, i32], returns: i32 },
  mcfs_fgetxattr: { args: [i32, P, P, i32], returns: i32 },
  mcfs_keep_fd: { args: [i32, u32, u32, i32, P, P], returns: i32 },
  mcfs_pool_start: { args: [P, i32, i32], returns: FFIType.void },
  mcfs_pool_open: { args: [u32, i32, P, i32, i32, i32, u32, u32, P, P], returns: i32 },
  mcfs_pool_unlink: { args: [u32, i32, P], returns: i32 },
  mcfs_pool_copy: { args: [u32, i32, i32, f64], returns: i32 },
  mcfs_pool_write_out: { args: [u32, i32, f64, f64, i32], returns: i32 },
  mcfs_pool_send: { args: [u32, i32, P, i32, i32, f64, i32, i32], returns: i32 },
  mcfs_pool_dial: { args: [u32, P, i32, P, i32, i32], returns: i32 },
  mcfs_pool_receive: { args: [u32, i32, i32, i32, f64, i32, i32], returns: i32 },
  mcfs_pool_poll: { args: [P, i32], returns: i32 },
  mcfs_pool_cut: { args: [i32], returns: i32 },
  mcfs_pool_close: { args: [i32], returns: i32 },
  mcfs_pool_close_many: { args: [P, i32], returns: i32 },
} as const;

let lib: ReturnType<typeof load> | undefined;
const load = () => loadEmbedded(libPath, "mcfs_beneath", symbols);

/** The confinement calls of native/beneath.c; each returns >= 0 or -errno. */
export function beneath() {
  return (lib ??= load());
}

