import type { MountEntry } from "./mounter.ts";
import { Code } from "@connectrpc/connect";
import * as fs from "node:fs";
import { csiError } from "./errors.ts";
import { VOLUMES_DIR, isVolumeId } from "./volume-dirs.ts";

export const MCFS_FSTYPE = "fuse.mcfs";

/** How a bind of a volume shows in mountinfo, whichever mount of its filesystem it came from. */
export interface VolumeOwner {
  id: string;
  /** Path inside the filesystem that a bind of the volume has as its root. */
  root: string;
  /** The mount's source when the volume has a filesystem of its own (undefined: a directory of the shared one). */
  fsname?: string;
}

/** A volume's directory on this node, ready to bind: name inside dir, opened without following a symlink. */
export interface VolumeSource extends VolumeOwner {
  dir: string;
  name: string;
}

/** Where volumes are found on this node: directories of the node-level mount, or mounts of their own. */
export interface VolumeSources {
  /** NotFound if there is no such volume, Unavailable if its mount is down. */
  ready(id: string): Promise<VolumeSource>;
  /** Needs neither Redis nor a live mount: a pod's bind comes off with both down. */
  owner(id: string): VolumeOwner;
}

export const owns = (o: VolumeOwner, e: MountEntry) => e.fstype === MCFS_FSTYPE && e.root === o.root && (o.fsname === undefined || e.source === o.fsname);

/** A volume of the shared filesystem: the directory volumes/<id> of the node-level mount. */
export function sharedVolume(mountPoint: string, id: string): VolumeSource {
  return { id, root: `/${VOLUMES_DIR}/${id}`, dir: `${mountPoint}/${VOLUMES_DIR}`, name: id };
}

/** The volume of the node-level mount a pod's bind is of, if it is one. */
export function sharedVolumeOf(mountPoint: string, e: MountEntry): VolumeSource | undefined {
  const prefix = `/${VOLUMES_DIR}/`;
  const id = e.root.slice(prefix.length);
  return e.root.startsWith(prefix) && isVolumeId(id) ? sharedVolume(mountPoint, id) : undefined;
}

const NOTICE_WAIT_MS = 2000, NOTICE_POLL_MS = 50;
const errCode = (e: unknown) => (e as NodeJS.ErrnoException).code;

/** Volumes as directories volumes/<id> of the node-level mount. */
export function createSharedSources(mountPoint: string): VolumeSources {
  return {
    /**
     * A volume the controller made a moment ago may not have reached this node's caches yet (the
     * notice is on its way): a missing one is looked for again for a little while.
     */
    async ready(id) {
      if (!isVolumeId(id)) throw csiError(Code.NotFound, `volume ${JSON.stringify(id)} does not exist`);
      const src = sharedVolume(mountPoint, id);
      for (let wait = 0; ; wait += NOTICE_POLL_MS) {
        try {
          if (fs.statSync(`${src.dir}/${src.name}`).isDirectory()) return src;
        } catch (e) {
          if (errCode(e) === "ENOTCONN") throw csiError(Code.Unavailable, `the node-level mcfs mount at ${mountPoint} is down`);
          if (errCode(e) !== "ENOENT") throw e;
        }
        if (wait >= NOTICE_WAIT_MS) throw csiError(Code.NotFound, `volume ${id} does not exist`);
        await Bun.sleep(NOTICE_POLL_MS);
      }
    },
    owner: (id) => sharedVolume(mountPoint, id),
  };
}

/** The fsname of the mount of a volume with a filesystem of its own. */
export const volumeFsname = (id: string) => `mcfs:${id}`;
