import type { ShimGrants } from "../fuse/types.ts";
import type { Inode } from "../meta/store.ts";

/**
 * Records of grants revoked or replaced, kept for the opens the shim answered from them before:
 * those are taken in after, and far fewer can be under way meanwhile.
 */
const REVOKED_RECORDS = 8192;
/** Handle numbers the shim holds for the opens it answers from grants. */
const GRANT_FHS = 64;

/**
 * The grants this node gave its FUSE shim (ShimGrants): which of them still stand, and the record
 * each was made of. An open the shim answered from one is taken in after it, maybe once a change
 * revoked it: its record is kept as long as the grant stands, and for REVOKED_RECORDS grants after.
 */
export interface OpenGrants {
  /**
   * Let the shim answer read-only opens of r's inode with fd's bytes (size of them; copy: another
   * node's file) at r's version; fresh: see ShimGrants.grant. Replaces a grant of the inode; past the
   * shim's limit the one granted longest ago goes. Its id, undefined if the shim took none.
   */
  grant(r: Inode, fd: number, size: number, copy: boolean, fresh: boolean): number | undefined;
  revoke(ino: number): void;
  clear(): void;
  /** Whether grant id of ino stands (neither revoked nor replaced). */
  stands(ino: number, id: number): boolean;
  /** Whether grant id of ino stands and its opens still drop the kernel's pages. */
  fresh(ino: number, id: number): boolean;
  /** The kernel holds no page of ino but of grant id's version: see ShimGrants.settle. */
  settle(ino: number, id: number): void;
  /** The version of ino the grant that stands is of, if one does. */
  versionOf(ino: number): number | undefined;
  /** The record grant id of ino was made of. */
  recordOf(ino: number, id: number): Inode | undefined;
  /** The shim answered an open from a grant: it took one of the handle numbers it holds. */
  tookHandle(): void;
}

interface Standing {
  id: number;
  r: Inode;
  fresh: boolean;
}

/** reserveFh: a handle number of the node's open files, for the shim to give one such open. */
export function createOpenGrants(shim: ShimGrants, reserveFh: () => number, revokedRecords = REVOKED_RECORDS): OpenGrants {
  const standing = new Map<number, Standing>();
  const revoked = new Map<number, Inode>();
  let seq = 0;
  /** ino's grant gone here (the shim's is gone or going): its record kept a while. */
  function gone(ino: number): void {
    const s = standing.get(ino);
    if (!s) return;
    standing.delete(ino);
    revoked.set(s.id, s.r);
    if (revoked.size > revokedRecords) revoked.delete(revoked.keys().next().value!);
  }
  const revoke = (ino: number) => {
    gone(ino);
    shim.revoke(ino);
  };
  return {
    grant(r, fd, size, copy, fresh) {
      // Handed with the first grant: the shim is running by then.
      if (seq === 0) shim.supply(Array.from({ length: GRANT_FHS }, reserveFh));
      gone(r.ino);
      // The one granted longest ago goes: each holds a file descriptor (ShimGrants.limit).
      if (standing.size >= shim.limit) revoke(standing.keys().next().value!);
      const id = ++seq;
      if (!shim.grant(r.ino, fd, id, r.version, size, copy, fresh)) return undefined;
      standing.set(r.ino, { id, r, fresh });
      return id;
    },
    revoke,
    clear() {
      for (const ino of [...standing.keys()]) gone(ino);
      shim.clear();
    },
    stands: (ino, id) => standing.get(ino)?.id === id,
    fresh: (ino, id) => {
      const s = standing.get(ino);
      return s?.id === id && s.fresh;
    },
    settle(ino, id) {
      const s = standing.get(ino);
      if (s?.id !== id || !s.fresh) return;
      s.fresh = false;
      shim.settle(ino, id);
    },
    versionOf: (ino) => standing.get(ino)?.r.version,
    recordOf(ino, id) {
      const s = standing.get(ino);
      return s?.id === id ? s.r : revoked.get(id);
    },
    tookHandle: () => shim.supply([reserveFh()]),
  };
}
