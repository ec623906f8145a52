import type { MetadataStore } from "../meta/store.ts";

const INO_BLOCK = 1024;
/** How far past the highest number seen the inode counter is raised after Redis lost writes. */
const INO_MARGIN = 1_000_000;

/** Inode numbers: the highest this node has seen, and a block of its own handed out without a round trip. */
export interface InodeNumbers {
  /** Highest inode number this node has seen (its kernel may know every one up to it). */
  readonly maxSeen: number;
  seen(ino: number): void;
  next(): Promise<number>;
}

export function createInodeNumbers(store: MetadataStore): InodeNumbers {
  let maxSeen = 0;
  let next = 0, end = 0;
  return {
    get maxSeen() {
      return maxSeen;
    },
    seen(ino) {
      if (ino > maxSeen) maxSeen = ino;
    },
    async next() {
      if (next >= end) {
        next = await store.reserveInodes(INO_BLOCK);
        if (next <= maxSeen) {
          // The counter went back (Redis lost writes): never hand out a number the kernel may know.
          await store.raiseInodeCounter(maxSeen + INO_MARGIN);
          next = await store.reserveInodes(INO_BLOCK);
        }
        end = next + INO_BLOCK;
      }
      return next++;
    },
  };
}
