import type { VolumeRecord } from "./volume-registry.ts";

/** Where volumes live in the filesystem's namespace: /volumes/<id>, one directory each. */
export const VOLUMES_DIR = "volumes";

/** Whether id can name a volume's directory (what CreateVolume hands out; nothing that leaves /volumes). */
export function isVolumeId(id: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(id);
}

/** Where volumes' files live: directories of the shared namespace, or (Redis Cluster) filesystems of their own. */
export interface VolumeDirs {
  /** What a new volume's record must carry to find its files (its own filesystem's tag), before it is stored. */
  place(id: string): Promise<Pick<VolumeRecord, "tag">>;
  /** Make the volume's home; nothing happens if it exists. replicas: copies of each of its files wanted. */
  create(rec: VolumeRecord, replicas?: number): Promise<void>;
  /** Remove the volume and all its files, for every node. rec: undefined when there is no record (a create cut short). */
  remove(id: string, rec: VolumeRecord | undefined): Promise<void>;
}
