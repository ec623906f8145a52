/** Where volumes live in the filesystem's namespace: /volumes/<id>, one directory each. */
export const VOLUMES_DIR = "volumes";

/** Whether id can name a volume's directory (what CreateVolume hands out; nothing that leaves /volumes). */
export function isVolumeId(id: string): boolean {
  return /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(id);
}

/** The volumes' directories in the shared namespace. */
export interface VolumeDirs {
  /** Make the volume's directory (and /volumes); nothing happens if it exists. replicas: copies of each of its files wanted. */
  create(id: string, replicas?: number): Promise<void>;
  /** Remove the volume's directory and all under it, for every node (holders delete their bytes). */
  remove(id: string): Promise<void>;
  exists(id: string): Promise<boolean>;
}
