/** One line of /proc/self/mountinfo. */
export interface MountEntry {
  /** Mount id (unique while mounted; /proc/self/fdinfo/N names the one an fd is on). */
  id: number;
  /** major:minor of the mounted filesystem. */
  dev: string;
  /** Path inside that filesystem that is mounted (a bind mount of a subdirectory shows it). */
  root: string;
  mountPoint: string;
  /** Per-mount options (ro, rw, nosuid...). */
  options: string[];
  fstype: string;
  /** The filesystem's source (a FUSE mount's fsname). */
  source: string;
}

/** Per-mount options a volume's bind may carry on top of nosuid,nodev, which every bind has. */
export const BIND_OPTIONS = ["ro", "noexec", "noatime", "nodiratime", "relatime", "strictatime"] as const;
export type BindOption = (typeof BIND_OPTIONS)[number];

export const isBindOption = (s: string): s is BindOption => (BIND_OPTIONS as readonly string[]).includes(s);

/**
 * Bind mounts and the mount table: what the node service does to the machine. Paths may be
 * /proc/self/fd/N of O_PATH descriptors, which name exactly the object opened, with no lookup.
 */
export interface Mounter {
  /** Bind source onto target (an existing directory); the new mount starts with the source mount's flags. */
  bind(source: string, target: string): void;
  /** Set the per-mount flags of the bind mount whose root target is to nosuid,nodev plus options. */
  restrict(target: string, options: readonly BindOption[]): void;
  /** Unmount target; lazy detaches it even while busy or dead. */
  unmount(target: string, lazy: boolean): void;
  /** The mount table of this process's mount namespace. */
  mounts(): MountEntry[];
}

/** The mount at path, if any (the last one mounted there is the one seen). */
export function mountAt(m: Mounter, path: string): MountEntry | undefined {
  return m.mounts().findLast((e) => e.mountPoint === path);
}
