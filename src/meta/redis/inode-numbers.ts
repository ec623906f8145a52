/** Inode numbers: P next, and what this client was handed of it. */
import type { RedisClient } from "../redis-connect.ts";
import type { InodeNumbers } from "../store.ts";
import type { Keys } from "./keys.ts";
import type { RunScript } from "./scripts.ts";

export interface RedisInodeNumbers extends InodeNumbers {
  /** A create took ino; raised: it found the counter behind numbers its caller had seen. */
  created(ino: number, raised: boolean): void;
}

export function createInodeNumbers(client: RedisClient, keys: Keys, run: RunScript): RedisInodeNumbers {
  /** Highest inode number this client was handed (creates, reserved blocks). */
  let handedOut = 0;
  /** A create found the counter behind numbers already seen (reported once by inodeCounter). */
  let wentBack = false;
  return {
    created(ino, raised) {
      if (ino > handedOut) handedOut = ino;
      if (raised) wentBack = true;
    },
    async reserveInodes(count) {
      const end = await client.incrBy(keys.next, count);
      if (end > handedOut) handedOut = end;
      return end - count + 1;
    },
    async inodeCounter() {
      const r = { counter: Number((await client.get(keys.next)) ?? 0), handedOut, wentBack };
      wentBack = false;
      return r;
    },
    async instanceId() {
      return /run_id:(\w+)/.exec(await client.info("server"))?.[1] ?? "";
    },
    async raiseInodeCounter(n) {
      await run("raisecounter", [n]);
    },
  };
}
