import type { Caller, FileSystem } from "../fuse/types.ts";
import type { MetadataStore } from "../meta/store.ts";
import { E, errnoOf, fsError } from "../util/errno.ts";

const XATTR_NAME_MAX = 255;
const XATTR_SIZE_MAX = 65536;

function checkXattrName(name: string): void {
  if (Buffer.byteLength(name) > XATTR_NAME_MAX) throw fsError("ERANGE");
  // ACLs, file capabilities and SELinux labels are not kept (the shim answers their reads itself).
  // Nor is anything else of system.*: the kernel leaves who may set those to the filesystem, and
  // any user could then set them on any file (as ext4 does, with no handler for the name).
  if (name.startsWith("system.") || name === "security.capability" || name === "security.selinux") throw fsError("EOPNOTSUPP");
  const ns = /^(user|trusted|security)\./.exec(name);
  if (!ns) throw fsError("EOPNOTSUPP");
  if (name.length === ns[0].length) throw fsError("EINVAL");
}

type XattrOps = Pick<FileSystem, "setxattr" | "getxattr" | "listxattr" | "removexattr">;

/**
 * Extended attributes: kept in the store only (every node sees the same), never on the local disk.
 * setting hears each one before it is set, and may refuse it (the replica count of a directory is one);
 * room throws when the store's room is kept for removals.
 */
export interface XattrOptions {
  /** Checks a set by a user may need (the daemon's --xattr setting). */
  setting?: (c: Caller, ino: number, name: string, value: Uint8Array) => Promise<void>;
  /** Throws when the disk has no room for more. */
  room?: () => void;
  /** A cluster node's VfsContext.onInode: an inode gone on another node is ESTALE, not "no such attribute" or an empty list. */
  onInode?: <T>(ino: number, fn: () => Promise<T>) => Promise<T>;
}

export function createXattrOps(store: MetadataStore, o: XattrOptions = {}): XattrOps {
  const onInode = <T>(ino: number, fn: () => Promise<T>): Promise<T> => (o.onInode ? o.onInode(ino, fn) : fn());
  /** Nothing kept for ino: whether because ino is gone is asked only then (one more call, on a miss alone). */
  const none = async (ino: number): Promise<void> => {
    if (o.onInode) await o.onInode(ino, () => store.get(ino));
  };
  return {
    async setxattr(c, ino, name, value, flags) {
      checkXattrName(name);
      if (value.length > XATTR_SIZE_MAX) throw fsError("E2BIG");
      o.room?.();
      await o.setting?.(c, ino, name, value);
      await onInode(ino, () => store.setXattr(ino, name, value, flags));
    },
    async getxattr(_c, ino, name) {
      checkXattrName(name);
      const v = await store.getXattr(ino, name);
      if (v) return v;
      await none(ino);
      throw fsError("ENODATA");
    },
    async listxattr(c, ino) {
      const names = await store.listXattr(ino);
      if (!names.length) await none(ino);
      // Only the administrator may read trusted.* (the kernel checks reads, not lists): as ext4, its names are not shown to others.
      return c.uid === 0 ? names : names.filter((n) => !n.startsWith("trusted."));
    },
    async removexattr(_c, ino, name) {
      checkXattrName(name);
      try {
        await onInode(ino, () => store.removeXattr(ino, name));
      } catch (e) {
        if (errnoOf(e) === E.ENODATA) await none(ino);
        throw e;
      }
    },
  };
}
