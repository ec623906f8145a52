import type { MetadataStore } from "../meta/store.ts";
import { toErrno, E } from "../util/errno.ts";
import { S_IFDIR } from "../util/file-mode.ts";
import { VOLUMES_DIR, isVolumeId, type VolumeDirs } from "./volume-dirs.ts";
import { setDirReplicas } from "../replicas/replica-count.ts";

const ROOT = 1;
const DT_DIR = 4;

/** Volume directories made and removed through the metadata store (the controller has no mount). */
export function createStoreVolumeDirs(store: MetadataStore): VolumeDirs {
  const code = (e: unknown) => toErrno(e);

  async function child(parent: number, name: string): Promise<number | undefined> {
    try {
      return (await store.lookup(parent, name)).ino;
    } catch (e) {
      if (code(e) === E.ENOENT) return undefined;
      throw e;
    }
  }

  async function mkdir(parent: number, name: string, mode: number): Promise<number> {
    const have = await child(parent, name);
    if (have !== undefined) return have;
    try {
      return (await store.create(parent, name, { mode: S_IFDIR | mode, uid: 0, gid: 0 })).ino;
    } catch (e) {
      // Made meanwhile by another call: fine.
      if (code(e) !== E.EEXIST) throw e;
      return (await store.lookup(parent, name)).ino;
    }
  }

  /** Depth first, each name through the store: other nodes drop their copies from their todo lists. */
  async function removeTree(parent: number, name: string, dir: boolean): Promise<void> {
    if (dir) {
      const ino = await child(parent, name);
      if (ino === undefined) return;
      for (const e of await store.listDir(ino)) await removeTree(ino, e.name, e.type === DT_DIR);
    }
    try {
      const r = await store.remove(parent, name, dir);
      if (!r.dir && r.nlink === 0) await store.purge(r.ino);
    } catch (e) {
      if (code(e) !== E.ENOENT) throw e;
    }
  }

  return {
    place: async () => ({}),
    async create(rec, replicas) {
      const vols = await mkdir(ROOT, VOLUMES_DIR, 0o755);
      // World-writable like an NFS export: pods run as any user; each pod sees only its own volume.
      const dir = await mkdir(vols, rec.id, 0o777);
      if (replicas !== undefined) await setDirReplicas(store, dir, replicas);
    },
    // Ids are names of directories: one left by a create cut short goes too.
    async remove(id) {
      if (!isVolumeId(id)) return;
      const vols = await child(ROOT, VOLUMES_DIR);
      if (vols !== undefined) await removeTree(vols, id, true);
    },
  };
}
