/**
 * Room kept on the disk of the private Redis for Redis's own appends. The bytes of the files share
 * that disk: once writes through the mount fill it, Redis can append nothing, refuses every change,
 * and not even a remove (the way to make room) goes through. The reserve is given back when Redis
 * says its disk is full, or when the disk is found nearly full, and made again once it has room to
 * spare. While it is given back, the daemon keeps the rest of Redis's room for removals.
 */
import { randomBytes } from "node:crypto";
import * as fs from "node:fs";
import { join } from "node:path";
import { freeBytes } from "../util/free-space.ts";
import type { Logger } from "../util/log.ts";

const NAME = "space-reserve";
/** How often a reserve given back is tried again. */
const REFILL_EVERY_MS = 5000;
/** Made only while the disk has this many times its size free: never what fills it. */
const ROOM_MARGIN = 2;
/** Given back unasked once the disk has less than this part of its size free (a start on a full disk asks nothing first). */
const LOW_FRACTION = 8;

export interface SpaceReserve {
  /** Give the room back to the disk: whether there was any to give. */
  release(): boolean;
  stop(): void;
}

/** onHeld: the reserve is kept (true) or not (false), at start and at each change. */
export function createSpaceReserve(dir: string, bytes: number, log: Logger, onHeld: (held: boolean) => void = () => {}): SpaceReserve {
  const path = join(dir, NAME);
  let held = false;
  let warned = false;

  const free = () => freeBytes(dir) ?? 0;
  const roomFor = () => free() >= ROOM_MARGIN * bytes;
  /** Written out (random bytes: a compressing filesystem keeps the room too), or nothing left. */
  const fill = (): boolean => {
    let fd: number | undefined;
    try {
      fd = fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_NOFOLLOW, 0o600);
      const block = randomBytes(Math.min(bytes, 1 << 20));
      for (let done = 0; done < bytes; done += block.length) fs.writeSync(fd, block, 0, Math.min(block.length, bytes - done));
      fs.fsyncSync(fd);
      return true;
    } catch (e) {
      // Once until it is kept: tried again every few seconds.
      if (!warned) log.warn({ path, err: (e as Error).message }, "could not keep room for the private Redis on its disk (a directory there must be removed by hand)");
      warned = true;
      try {
        fs.unlinkSync(path);
      } catch {
        // never made, or a directory (left alone: it may hold something)
      }
      return false;
    } finally {
      if (fd !== undefined) fs.closeSync(fd);
    }
  };
  const release = (): boolean => {
    if (!held) return false;
    held = false;
    onHeld(false);
    try {
      fs.unlinkSync(path);
    } catch (e) {
      log.error({ path, err: (e as Error).message }, "could not give back the room kept for the private Redis");
      return false;
    }
    log.warn({ path, bytes }, "the disk of the private Redis is full: gave back the room kept for it, so changes (removing files to make room) go through");
    return true;
  };
  const refill = () => {
    // Nearly full with the reserve kept: Redis's next append (or its first, at a start) would fail.
    if (held && free() < bytes / LOW_FRACTION) release();
    if (held || !roomFor()) return;
    held = fill();
    if (!held) return;
    warned = false;
    log.info({ path, bytes }, "room for the private Redis kept");
    onHeld(true);
  };

  try {
    const st = fs.lstatSync(path);
    held = st.isFile() && st.size === bytes;
  } catch {
    held = false;
  }
  if (held) {
    onHeld(true);
    refill();
  } else {
    onHeld(false);
    if (!roomFor()) log.warn({ path, bytes }, "no room kept for the private Redis on its disk (too full): kept once the disk has room");
    refill();
  }
  const timer = setInterval(refill, REFILL_EVERY_MS);
  timer.unref();

  return {
    release,
    stop: () => clearInterval(timer),
  };
}
