/** One line of /proc/self/mountinfo. */
export interface MountEntry {
  /** major:minor of the mounted filesystem. */
  dev: string;
  /** Path inside that filesystem that is mounted (a bind mount of a subdirectory shows it). */
  root: string;
  mountPoint: string;
  /** Per-mount options (ro, rw, nosuid...). */
  options: string[];
  fstype: string;
}

/** Bind mounts and the mount table: what the node service does to the machine. */
export interface Mounter {
  /** Bind source onto target (an existing directory), read-only if asked. */
  bind(source: string, target: string, readonly: boolean): void;
  /** Unmount target; lazy detaches it even while busy or dead. */
  unmount(target: string, lazy: boolean): void;
  /** The mount table of this process's mount namespace. */
  mounts(): MountEntry[];
}
