import * as fs from "node:fs";
import type { MetadataStore } from "../meta/store.ts";
import type { Logger } from "../util/log.ts";

/**
 * Numbers past the last kept high-water mark that this node may have been handed before Redis lost
 * them (the mark is written once a heartbeat): the counter is raised past them too.
 */
const MARGIN = 1_000_000;

export type RedisCheck = "ok" | "restarted" | "behind";

export interface RollbackGuard {
  /**
   * Whether Redis may have lost writes since the last check:
   * - "behind": its inode counter is behind numbers this node saw handed out (kept on its disk across
   *   restarts): it certainly lost writes (a restore from an older copy, the last second of an
   *   `appendfsync everysec` AOF). The counter is raised so that no number comes again.
   * - "restarted": the server restarted, and may have come back without its last writes.
   * Either way the caller checks what this node holds against the namespace again.
   */
  check(): Promise<RedisCheck>;
}

export function createRollbackGuard(o: { store: MetadataStore; markFile: string; log: Logger }): RollbackGuard {
  const read = () => {
    try {
      return Number(fs.readFileSync(o.markFile, "utf8").trim()) || 0;
    } catch {
      return 0;
    }
  };
  let mark = read();
  let written = mark;
  let instance: string | undefined;
  return {
    async check() {
      const [{ counter, handedOut, wentBack }, id] = await Promise.all([o.store.inodeCounter(), o.store.instanceId()]);
      const restarted = instance !== undefined && id !== instance;
      instance = id;
      mark = Math.max(mark, handedOut);
      const behind = counter < mark || wentBack;
      if (behind) {
        o.log.error({ counter, highWater: mark }, "Redis has lost recent writes: its inode counter is behind numbers already handed out. Raising it, dropping cached metadata and copies, and republishing this node's files");
        await o.store.raiseInodeCounter(mark + MARGIN);
        mark += MARGIN;
      }
      if (mark > written) {
        // Written beside, then renamed: a crash leaves the old mark or the new one, never half of one.
        fs.writeFileSync(`${o.markFile}.tmp`, `${mark}\n`);
        fs.renameSync(`${o.markFile}.tmp`, o.markFile);
        written = mark;
      }
      return behind ? "behind" : restarted ? "restarted" : "ok";
    },
  };
}
