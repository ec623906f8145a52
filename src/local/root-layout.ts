/** Name reserved at the top of every root path for mcfs's own state (node id, lock, the private Redis's data). */
export const RESERVED_NAME = ".mcfs";
