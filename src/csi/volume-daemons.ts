import * as fs from "node:fs";
import { join } from "node:path";
import { Code } from "@connectrpc/connect";
import type { Logger } from "../util/log.ts";
import { RESERVED_NAME } from "../local/root-layout.ts";
import { isVolumeTag } from "./volume-tags.ts";
import { csiError } from "./errors.ts";
import { mountAt, type Mounter } from "./mounter.ts";
import type { VolumeBinder } from "./volume-binder.ts";
import { isVolumeId } from "./volume-dirs.ts";
import { allVolumes, type VolumeRecord, type VolumeRegistry } from "./volume-registry.ts";
import { MCFS_FSTYPE, owns, volumeFsname, type VolumeOwner, type VolumeSource, type VolumeSources } from "./volume-source.ts";
import { createKeyedQueue } from "../util/keyed-queue.ts";

/** A volume's daemon on this node, as the node plugin starts it. */
export interface VolumeDaemon {
  id: string;
  tag: string;
  mount: string;
  root: string;
}

export interface VolumeDaemonsOptions {
  /** <rootDir>/<tag>: a volume's bytes on this node (its daemon's root path). */
  rootDir: string;
  /** <mountDir>/<tag>: a volume's mount on this node. */
  mountDir: string;
  podsDir: string;
  registry: VolumeRegistry;
  mounter: Mounter;
  binder: VolumeBinder;
  /** Start a volume's daemon (in its own session, outliving this process); resolves once it has mounted. */
  start(d: VolumeDaemon): Promise<void>;
  /** Remove what the volume's daemon kept outside its root (its copy cache). */
  forget(tag: string): void;
  /** Remove every key under a deleted volume's tag; returns how many there were. */
  dropKeys(tag: string): Promise<number>;
  /** The driver's own tag: volumes' tags are <base>-v<12 hex digits>, and no other name is acted on. */
  base: string;
  log: Logger;
}

/** Volumes with filesystems of their own (Redis Cluster), each served on this node by a daemon of its own. */
export interface VolumeDaemons extends VolumeSources {
  /**
   * One round: every volume this node holds bytes of has its daemon running (other nodes read
   * from it, pod or no pod), pods' binds of a dead mount are re-bound to the new one, and volumes
   * being deleted are stopped and their bytes removed.
   */
  check(): Promise<void>;
  /** Every volume this node serves is mounted. */
  healthy(): boolean;
}

const STOP_WAIT_MS = 10_000, POLL_MS = 100;

export function createVolumeDaemons(o: VolumeDaemonsOptions): VolumeDaemons {
  const owner = (id: string): VolumeOwner => ({ id, root: "/", fsname: volumeFsname(id) });
  const daemonOf = (id: string, tag: string): VolumeDaemon => ({ id, tag, mount: join(o.mountDir, tag), root: join(o.rootDir, tag) });
  /** One start or stop at a time per volume: a publish and a check round may both want it up. */
  const busy = createKeyedQueue<string>();
  const warned = new Set<string>();
  let alive = true;

  /** The device of the volume's live mount, if it is mounted and answers. */
  function live(d: VolumeDaemon): string | undefined {
    const e = mountAt(o.mounter, d.mount);
    if (!e || e.fstype !== MCFS_FSTYPE || e.source !== volumeFsname(d.id)) return undefined;
    try {
      fs.statSync(d.mount);
      return e.dev;
    } catch {
      return undefined;
    }
  }

  const up = (d: VolumeDaemon) =>
    busy.run(d.tag, async () => {
      // The daemon makes its root and mount point, and clears a dead mount left there.
      if (live(d) !== undefined) return;
      o.log.info({ volume: d.id, tag: d.tag, mount: d.mount }, "starting the volume's daemon");
      await o.start(d);
    });

  /** Pods' binds of an earlier mount of the volume (its daemon died and was started again). */
  function rebind(d: VolumeDaemon, dev: string): void {
    const pods = fs.existsSync(o.podsDir) ? `${fs.realpathSync(o.podsDir)}/` : undefined;
    if (!pods) return;
    const src: VolumeSource = { ...owner(d.id), dir: o.mountDir, name: d.tag };
    for (const e of o.mounter.mounts()) {
      if (e.dev === dev || !e.mountPoint.startsWith(pods) || !owns(src, e)) continue;
      try {
        o.binder.rebind(e, src);
      } catch (err) {
        o.log.error({ target: e.mountPoint, volume: d.id, err: (err as Error).message }, "could not re-bind a pod's volume");
      }
    }
  }

  /** The pid in the daemon's lock file, if that process still runs this daemon. */
  function pidOf(d: VolumeDaemon): number | undefined {
    try {
      const pid = Number(fs.readFileSync(join(d.root, RESERVED_NAME, "daemon.lock"), "utf8").trim());
      const cmd = fs.readFileSync(`/proc/${pid}/cmdline`, "utf8").split("\0");
      return pid > 0 && cmd.includes(d.root) ? pid : undefined;
    } catch {
      return undefined;
    }
  }

  async function gone(pid: number, ms: number): Promise<boolean> {
    for (const end = Date.now() + ms; Date.now() < end; await Bun.sleep(POLL_MS)) if (!fs.existsSync(`/proc/${pid}`)) return true;
    return !fs.existsSync(`/proc/${pid}`);
  }

  /**
   * Stop the daemon of a deleted volume and remove its mount point, cache and bytes from this node,
   * the root last: it is what tells a later round that something is left. Once the controller is
   * done (keys: true), the keys a daemon wrote as it was deleted (it started just then) go too.
   */
  const retire = (d: VolumeDaemon, keys: boolean) =>
    busy.run(d.tag, async () => {
      const pid = pidOf(d);
      if (pid !== undefined) {
        process.kill(pid, "SIGTERM");
        if (!(await gone(pid, STOP_WAIT_MS))) {
          o.log.warn({ volume: d.id, pid }, "the deleted volume's daemon did not stop: killed");
          process.kill(pid, "SIGKILL");
          await gone(pid, STOP_WAIT_MS);
        }
      }
      while (mountAt(o.mounter, d.mount)) o.mounter.unmount(d.mount, true);
      fs.rmSync(d.mount, { recursive: true, force: true });
      o.forget(d.tag);
      const left = keys ? await o.dropKeys(d.tag) : 0;
      if (left) o.log.warn({ tag: d.tag, keys: left }, "keys written by the deleted volume's daemon after the controller removed its filesystem: removed");
      fs.rmSync(d.root, { recursive: true, force: true });
      o.log.info({ ...(d.id ? { volume: d.id } : {}), tag: d.tag }, "deleted volume: its daemon stopped and its bytes removed from this node");
    });

  const local = () => (fs.existsSync(o.rootDir) ? fs.readdirSync(o.rootDir).filter((n) => isVolumeTag(o.base, n)) : []);

  return {
    owner,

    async ready(id) {
      if (!isVolumeId(id)) throw csiError(Code.NotFound, `volume ${JSON.stringify(id)} does not exist`);
      const rec = await o.registry.get(id);
      if (!rec || rec.deleting) throw csiError(Code.NotFound, `volume ${id} does not exist`);
      if (!rec.tag) throw csiError(Code.FailedPrecondition, `volume ${id} has no filesystem of its own: it was made by a driver on a single Redis`);
      if (!isVolumeTag(o.base, rec.tag)) throw csiError(Code.FailedPrecondition, `volume ${id} names a filesystem tag ${JSON.stringify(rec.tag)} this driver did not make`);
      const d = daemonOf(id, rec.tag);
      try {
        await up(d);
      } catch (e) {
        throw csiError(Code.Unavailable, `the daemon of volume ${id} did not mount at ${d.mount}: ${(e as Error).message}`);
      }
      return { ...owner(id), dir: o.mountDir, name: d.tag };
    },

    async check() {
      let byTag: Map<string, VolumeRecord>, deleted: Set<string>;
      try {
        byTag = new Map();
        for (const r of await allVolumes(o.registry)) {
          // Tags become paths here: only ones of this driver's form (local() lists no others).
          if (!r.tag || !isVolumeTag(o.base, r.tag)) continue;
          // A tag two records name (only by editing Redis) stays served while either is live.
          if (!byTag.get(r.tag) || byTag.get(r.tag)?.deleting) byTag.set(r.tag, r);
        }
        deleted = await o.registry.deletedTags();
      } catch (e) {
        o.log.warn({ err: (e as Error).message }, "could not read the volume records: this node's volumes are checked again later");
        return;
      }
      let all = true;
      for (const tag of local()) {
        const rec = byTag.get(tag);
        if (!rec && !deleted.has(tag)) {
          // Never guessed away: a wrong --redis-url must not cost anyone their files.
          if (!warned.has(tag)) o.log.warn({ root: join(o.rootDir, tag) }, "bytes of a volume filesystem no volume record names: left in place");
          warned.add(tag);
          continue;
        }
        const d = daemonOf(rec?.id ?? "", tag);
        if (!rec || rec.deleting) {
          await retire(d, !rec).catch((e: unknown) => o.log.error({ volume: d.id, tag, err: (e as Error).message }, "could not remove a deleted volume from this node"));
          continue;
        }
        await up(d).catch((e: unknown) => o.log.error({ volume: rec.id, err: (e as Error).message }, "the volume's daemon did not start"));
        const dev = live(d);
        if (dev === undefined) all = false;
        else rebind(d, dev);
      }
      alive = all;
    },

    healthy: () => alive,
  };
}
