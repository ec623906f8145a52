import { FFIType, type dlopen } from "bun:ffi";
import { loadEmbedded } from "../util/embedded-lib.ts";
import shimPath from "../../native/build/mcfs_fuse.so" with { type: "file" };

const { i32, u32, u64, f64, ptr: P, void: V } = FFIType;

const symbols = {
  mcfs_start: { args: [P, P, i32, i32], returns: i32 },
  mcfs_running: { args: [], returns: i32 },
  mcfs_poll: { args: [P, i32], returns: i32 },
  mcfs_stop: { args: [i32, i32], returns: i32 },
  mcfs_reply_err: { args: [u32, i32], returns: i32 },
  mcfs_reply_none: { args: [u32], returns: i32 },
  mcfs_reply_entry: { args: [u32, P, f64, f64], returns: i32 },
  mcfs_reply_attr: { args: [u32, P, f64], returns: i32 },
  mcfs_reply_open: { args: [u32, u64, i32, u32], returns: i32 },
  mcfs_reply_create: { args: [u32, P, f64, f64, u64, i32, u32], returns: i32 },
  mcfs_clear_fh: { args: [u64], returns: V },
  mcfs_io_counters: { args: [P], returns: V },
  mcfs_reply_buf: { args: [u32, P, u64], returns: i32 },
  mcfs_reply_write: { args: [u32, u64], returns: i32 },
  mcfs_reply_xattr: { args: [u32, u64], returns: i32 },
  mcfs_reply_readlink: { args: [u32, P], returns: i32 },
  mcfs_reply_statfs: { args: [u32, P], returns: i32 },
  mcfs_reply_dir: { args: [u32, u64, i32, P, i32, f64, f64], returns: i32 },
  mcfs_inval_entry: { args: [u64, P], returns: i32 },
  mcfs_inval_inode: { args: [u64], returns: i32 },
  mcfs_inval_attrs: { args: [u64], returns: i32 },
  mcfs_notes_pushed: { args: [], returns: u64 },
  mcfs_notes_done: { args: [], returns: u64 },
} as const;

export type Shim = ReturnType<typeof dlopen<typeof symbols>>["symbols"];

let loaded: Shim | undefined;

/** Load the shim (embedded in the binary). */
export async function loadShim(): Promise<Shim> {
  loaded ??= loadEmbedded(shimPath, "mcfs_fuse", symbols);
  return loaded;
}
