import type { ShimGrants } from "../fuse/types.ts";

/**
 * The grants this node gave its FUSE shim (ShimGrants), and which of them still stand: an open the
 * shim answered from one is taken in after it, maybe once a change revoked it.
 */
export interface OpenGrants extends ShimGrants {
  /** Whether grant id of ino stands (neither revoked nor replaced). */
  stands(ino: number, id: number): boolean;
  /** The version of ino the grant that stands is of, if one does. */
  versionOf(ino: number): number | undefined;
}

export function createOpenGrants(shim: ShimGrants): OpenGrants {
  const standing = new Map<number, { id: number; version: number }>();
  const revoke = (ino: number) => {
    standing.delete(ino);
    shim.revoke(ino);
  };
  return {
    limit: shim.limit,
    grant(ino, fd, id, version, size, copy, fresh) {
      standing.delete(ino);
      // The one granted longest ago goes: each holds a file descriptor (ShimGrants.limit).
      if (standing.size >= shim.limit) revoke(standing.keys().next().value!);
      if (!shim.grant(ino, fd, id, version, size, copy, fresh)) return false;
      standing.set(ino, { id, version });
      return true;
    },
    revoke,
    clear() {
      standing.clear();
      shim.clear();
    },
    settle: (ino, id) => shim.settle(ino, id),
    supply: (fhs) => shim.supply(fhs),
    stands: (ino, id) => standing.get(ino)?.id === id,
    versionOf: (ino) => standing.get(ino)?.version,
  };
}
