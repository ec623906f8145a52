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
  /**
   * What a check that failed half-way had found (its Redis identity taken, its one-shot wentBack
   * read): the next check answers at least that. Else another node raising the counter meanwhile
   * would make a lost write look like none.
   */
  let found: RedisCheck = "ok";
  return {
    async check() {
      // One after the other: inodeCounter hands wentBack over once, and a failed identity read must not lose it.
      const id = await o.store.instanceId();
      const { counter, handedOut, wentBack } = await o.store.inodeCounter();
      const restarted = found === "restarted" || (instance !== undefined && id !== instance);
      instance = id;
      mark = Math.max(mark, handedOut);
      const behind = found === "behind" || counter < mark || wentBack;
      found = behind ? "behind" : restarted ? "restarted" : "ok";
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
      const how = found;
      found = "ok";
      return how;
    },
  };
}
