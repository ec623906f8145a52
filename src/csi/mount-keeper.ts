import * as fs from "node:fs";
import type { Logger } from "../util/log.ts";
import { mountAt, type Mounter, type MountEntry } from "./mounter.ts";
import type { VolumeBinder } from "./volume-binder.ts";
import { MCFS_FSTYPE, type VolumeSource } from "./volume-source.ts";

/**
 * Watches the node-level mount. When it is down, starts the node daemon (if this process manages
 * it); when it is back (a new FUSE connection, so a new device), re-binds the pods' volumes that
 * still point at the dead one, so pods do not keep "Transport endpoint is not connected".
 */
export interface MountKeeper {
  /** Whether the node-level mount answers. */
  healthy(): boolean;
  /** One round of checks (also run by the timer). */
  check(): Promise<void>;
  stop(): void;
}

export interface MountKeeperOptions {
  mountPoint: string;
  mounter: Mounter;
  /** Re-binds the pods' volumes. */
  binder: VolumeBinder;
  /** The volume a pod's bind is of, found in the node-level mount. */
  sourceOf(e: MountEntry): VolumeSource | undefined;
  /** Start the node daemon (undefined: it runs elsewhere, e.g. its own container). */
  startDaemon?: () => Promise<void>;
  intervalMs: number;
  log: Logger;
}

export function createMountKeeper(o: MountKeeperOptions): MountKeeper {
  /** Devices the node mount has had: binds of an older one are stale. */
  const seen = new Set<string>();
  let alive = false;
  let starting: Promise<void> | undefined;
  let running: Promise<void> | undefined;

  function live(): string | undefined {
    const e = mountAt(o.mounter, o.mountPoint);
    if (!e || e.fstype !== MCFS_FSTYPE) return undefined;
    seen.add(e.dev);
    try {
      fs.statSync(o.mountPoint);
      return e.dev;
    } catch {
      return undefined;
    }
  }

  function repair(dev: string): void {
    for (const e of o.mounter.mounts()) {
      if (e.fstype !== MCFS_FSTYPE || e.dev === dev || !seen.has(e.dev) || e.mountPoint === o.mountPoint) continue;
      const src = o.sourceOf(e);
      if (!src) continue;
      try {
        o.binder.rebind(e, src);
      } catch (err) {
        o.log.error({ target: e.mountPoint, volume: e.root, err: (err as Error).message }, "could not re-bind a pod's volume");
      }
    }
  }

  async function round(): Promise<void> {
    const dev = live();
    alive = dev !== undefined;
    if (dev !== undefined) {
      repair(dev);
      return;
    }
    if (o.startDaemon && !starting) {
      o.log.warn({ mount: o.mountPoint }, "node-level mount is down: starting the node daemon");
      starting = o.startDaemon().finally(() => (starting = undefined));
      await starting.catch((e: unknown) => o.log.error({ err: (e as Error).message }, "node daemon did not start"));
      const again = live();
      alive = again !== undefined;
      if (again !== undefined) repair(again);
    }
  }

  const check = () => (running ??= round().finally(() => (running = undefined)));
  const timer = setInterval(() => void check(), o.intervalMs);
  return {
    healthy: () => alive,
    check,
    stop: () => clearInterval(timer),
  };
}
