import * as fs from "node:fs";
import { Code } from "@connectrpc/connect";
import type { Logger } from "../util/log.ts";
import { csiError, invalid } from "./errors.ts";
import { fdPath, mountIdOf, openDirAt, openDirPath, withFds } from "./fds.ts";
import { isMade, markMade } from "./made-mark.ts";
import { isBindOption, type BindOption, type Mounter, type MountEntry } from "./mounter.ts";
import { targetComponents } from "./target-path.ts";
import { MCFS_FSTYPE, owns, type VolumeOwner, type VolumeSource } from "./volume-source.ts";

/**
 * Puts volumes' binds onto pods' targets and takes them off, and nothing else. Every target is
 * reached from kubelet's pods directory one component at a time without following a symlink, and
 * mounted or unmounted through /proc/self/fd/N of the descriptor that walk ended on (as runc does):
 * a target that is, or is swapped for, a symlink cannot send a mount anywhere else.
 */
export interface VolumeBinder {
  /** InvalidArgument unless target is a clean absolute path beneath the pods directory. */
  checkTarget(target: string): void;
  /** Bind the volume onto target with nosuid,nodev and options; nothing happens if that bind is there. */
  publish(src: VolumeSource, target: string, options: readonly BindOption[]): void;
  /** Take the volume's bind off target and remove the target if the driver made it and it is empty. */
  unpublish(owner: VolumeOwner, target: string): void;
  /** Replace a pod's bind of a dead mount (a mountinfo entry) by a bind of the live source, same options. */
  rebind(stale: MountEntry, src: VolumeSource): void;
  /** Add nosuid,nodev to the pods' binds that lack them (made by a version that dropped them on read-only binds). */
  tightenAll(): void;
}

export interface VolumeBinderOptions {
  podsDir: string;
  mounter: Mounter;
  log: Logger;
}

const errCode = (e: unknown) => (e as NodeJS.ErrnoException).code;
/** Bounds the unmounting of binds stacked at one target (by an older version, or a crash mid-publish). */
const MAX_STACKED = 16;

/** Options of a mount as mountinfo shows them that a bind with these options must carry. */
function expected(options: readonly BindOption[]): string[] {
  return [options.includes("ro") ? "ro" : "rw", "nosuid", "nodev", ...(options.includes("noexec") ? ["noexec"] : [])];
}

const carries = (e: MountEntry, options: readonly BindOption[]) =>
  expected(options).every((o) => e.options.includes(o)) && e.options.includes("noexec") === options.includes("noexec");

export function createVolumeBinder(o: VolumeBinderOptions): VolumeBinder {
  const entry = (id: number) => o.mounter.mounts().find((e) => e.id === id);

  /** What is mounted exactly at the target fd names (its mount differs from its parent's), if anything. */
  function mountedAt(parent: number, target: number): MountEntry | undefined {
    const id = mountIdOf(target);
    if (id === mountIdOf(parent)) return undefined;
    const e = entry(id);
    if (!e) throw csiError(Code.Internal, `mount ${id} is not in /proc/self/mountinfo`);
    return e;
  }

  /** The parent directory of a target, walked from base; undefined when a component is missing. */
  function openParent(base: string, parts: string[], keep: (fd: number) => number, target: string): number | undefined {
    let fd: number;
    try {
      fd = keep(openDirPath(base));
      for (const name of parts.slice(0, -1)) fd = keep(openDirAt(fd, name));
    } catch (e) {
      if (errCode(e) === "ENOENT") return undefined;
      if (errCode(e) === "ENOTDIR" || errCode(e) === "ELOOP") throw invalid("target_path", `${JSON.stringify(target)} passes through a symlink or a non-directory`);
      throw e;
    }
    return fd;
  }

  /** The target directory inside parent; undefined when missing; a symlink or a file there is refused. */
  function openTarget(parent: number, name: string, keep: (fd: number) => number, target: string): number | undefined {
    try {
      return keep(openDirAt(parent, name));
    } catch (e) {
      if (errCode(e) === "ENOENT") return undefined;
      if (errCode(e) !== "ENOTDIR" && errCode(e) !== "ELOOP") throw e;
      const what = fs.lstatSync(`${fdPath(parent)}/${name}`).isSymbolicLink() ? "is a symlink" : "is not a directory";
      throw invalid("target_path", `${JSON.stringify(target)} ${what}`);
    }
  }

  /** The volume's directory; a symlink there (stored data) is not followed. */
  function openSource(src: VolumeSource, keep: (fd: number) => number): number {
    try {
      return keep(openDirAt(keep(openDirPath(src.dir)), src.name));
    } catch (e) {
      if (errCode(e) === "ENOENT") throw csiError(Code.NotFound, `volume ${src.id} does not exist`);
      if (errCode(e) === "ENOTDIR") throw csiError(Code.FailedPrecondition, `${src.dir}/${src.name}, volume ${src.id}, is not a directory`);
      if (errCode(e) === "ENOTCONN") throw csiError(Code.Unavailable, `the mcfs mount of volume ${src.id} (${src.dir}) is down`);
      throw e;
    }
  }

  /**
   * Bind the volume onto the (unmounted) directory name inside parent and restrict its flags. On any
   * failure the one mount made here is taken off again, so a retry never finds a stack.
   */
  function bindOnto(src: VolumeSource, parent: number, name: string, options: readonly BindOption[], keep: (fd: number) => number, target: string): void {
    const id = src.id;
    const before = keep(openDirAt(parent, name));
    // The mounter's errors name descriptors; the caller needs the target.
    const named = (what: string, fn: () => void) => {
      try {
        fn();
      } catch (e) {
        throw csiError(Code.Internal, `${what} of volume ${id} on ${target}: ${errCode(e) ?? (e as Error).message}`);
      }
    };
    const source = openSource(src, keep);
    named("bind mount", () => o.mounter.bind(fdPath(source), fdPath(before)));
    // The descriptor opened before still names the covered directory: open again to reach the new mount's root.
    const now = keep(openDirAt(parent, name));
    const made = mountedAt(parent, now);
    try {
      if (!made || !owns(src, made)) {
        throw csiError(Code.Internal, `bind mount of volume ${id} on ${target} did not take effect`);
      }
      named(`remount with ${expected(options).join(",")}`, () => o.mounter.restrict(fdPath(now), options));
      if (!carries(entry(made.id) ?? made, options)) throw csiError(Code.Internal, `${target} did not take the mount options ${expected(options).join(",")}`);
    } catch (e) {
      if (made) o.mounter.unmount(fdPath(now), true);
      throw e;
    }
  }

  /** Remove the target directory if this driver made it and it is empty; any other stays (it is kubelet's). */
  function removeIfMade(parent: number, name: string, dir: number, target: string): void {
    if (!isMade(fdPath(dir))) return;
    try {
      fs.rmdirSync(`${fdPath(parent)}/${name}`);
    } catch (e) {
      if (errCode(e) === "ENOENT") return;
      if (errCode(e) !== "ENOTEMPTY") throw e;
      o.log.warn({ target }, "the target directory the driver made is not empty: left in place");
    }
  }

  /** Walk to the target a mountinfo entry names (paths there are resolved: from the pods dir's real path). */
  function reach<T>(e: MountEntry, fn: (parent: number, name: string, dir: number, keep: (fd: number) => number) => T): T {
    const base = fs.realpathSync(o.podsDir);
    const parts = targetComponents(e.mountPoint, base);
    return withFds((keep) => {
      const parent = openParent(base, parts, keep, e.mountPoint);
      const dir = parent === undefined ? undefined : openTarget(parent, parts.at(-1)!, keep, e.mountPoint);
      if (parent === undefined || dir === undefined || mountedAt(parent, dir)?.id !== e.id) throw new Error(`${e.mountPoint} no longer has mount ${e.id} on top`);
      return fn(parent, parts.at(-1)!, dir, keep);
    });
  }

  return {
    checkTarget(target) {
      targetComponents(target, o.podsDir);
    },

    publish(src, target, options) {
      const parts = targetComponents(target, o.podsDir);
      const name = parts.at(-1)!;
      withFds((keep) => {
        const parent = openParent(o.podsDir, parts, keep, target);
        if (parent === undefined) throw csiError(Code.FailedPrecondition, `the parent directory of target_path ${JSON.stringify(target)} does not exist`);
        let dir = openTarget(parent, name, keep, target);
        if (dir === undefined) {
          fs.mkdirSync(`${fdPath(parent)}/${name}`, { mode: 0o750 });
          dir = openTarget(parent, name, keep, target)!;
          try {
            markMade(fdPath(dir));
          } catch (e) {
            // Publishing still works; the directory is then not known as ours and stays for kubelet to remove.
            o.log.warn({ target, err: (e as Error).message }, "could not mark the target directory as made by the driver");
          }
        }
        const have = mountedAt(parent, dir!);
        if (have) {
          if (owns(src, have) && carries(have, options)) return;
          throw csiError(Code.AlreadyExists, `${target} is already mounted (${have.fstype} ${have.root} ${have.options.join(",")})`);
        }
        try {
          bindOnto(src, parent, name, options, keep, target);
        } catch (e) {
          removeIfMade(parent, name, dir!, target);
          throw e;
        }
      });
    },

    unpublish(owner, target) {
      const parts = targetComponents(target, o.podsDir);
      const name = parts.at(-1)!;
      withFds((keep) => {
        const parent = openParent(o.podsDir, parts, keep, target);
        if (parent === undefined) return;
        for (let i = 0; ; i++) {
          const dir = openTarget(parent, name, keep, target);
          if (dir === undefined) return;
          const m = mountedAt(parent, dir);
          if (!m) {
            removeIfMade(parent, name, dir, target);
            return;
          }
          if (!owns(owner, m)) {
            throw csiError(Code.FailedPrecondition, `${target} has ${m.fstype} ${m.source}${m.root} mounted, not volume ${owner.id}: left alone`);
          }
          if (i >= MAX_STACKED) throw csiError(Code.Internal, `${target} is still mounted`);
          // Lazy: the descriptor that names the mount exactly also keeps it busy.
          o.mounter.unmount(fdPath(dir), true);
        }
      });
    },

    rebind(stale, src) {
      if (!owns(src, stale)) throw new Error(`${stale.mountPoint} has ${stale.source}${stale.root} mounted, not volume ${src.id}`);
      const options = stale.options.filter(isBindOption);
      reach(stale, (parent, name, dir, keep) => {
        o.mounter.unmount(fdPath(dir), true);
        bindOnto(src, parent, name, options, keep, stale.mountPoint);
      });
      o.log.info({ target: stale.mountPoint, volume: src.id, options }, "re-bound a pod's volume to the new mount");
    },

    tightenAll() {
      if (!fs.existsSync(o.podsDir)) return;
      const base = fs.realpathSync(o.podsDir);
      for (const e of o.mounter.mounts()) {
        if (e.fstype !== MCFS_FSTYPE || !e.mountPoint.startsWith(`${base}/`)) continue;
        if (e.options.includes("nosuid") && e.options.includes("nodev")) continue;
        const options = e.options.filter(isBindOption);
        try {
          reach(e, (_parent, _name, dir) => o.mounter.restrict(fdPath(dir), options));
          o.log.info({ target: e.mountPoint, volume: e.root, options }, "added nosuid,nodev to a pod's bind");
        } catch (err) {
          o.log.error({ target: e.mountPoint, volume: e.root, err: (err as Error).message }, "could not add nosuid,nodev to a pod's bind");
        }
      }
    },
  };
}
