import { afterAll, beforeAll } from "bun:test";
import { tempDir } from "./env.ts";
import { startRedis, type TestRedis } from "./redis.ts";
import { startDaemon, type TestDaemon } from "./daemon.ts";

export interface OneNode {
  readonly daemon: TestDaemon;
  readonly redis: TestRedis;
  /** Temp dir holding the node's root, mount and logs. */
  readonly base: string;
}

/**
 * One mcfs node on its own redis-server for the tests of the calling describe block: started before
 * them, stopped, unmounted and removed after them.
 */
export function useOneNode(tag: string): OneNode {
  const t = tempDir(tag);
  let redis: TestRedis | undefined;
  let daemon: TestDaemon | undefined;
  beforeAll(async () => {
    redis = await startRedis();
    daemon = await startDaemon({ base: t.path, name: "n1", redisUrl: redis.url });
  });
  afterAll(async () => {
    await daemon?.stop();
    await redis?.stop();
    t.remove();
  });
  return {
    get daemon() {
      return daemon!;
    },
    get redis() {
      return redis!;
    },
    base: t.path,
  };
}
