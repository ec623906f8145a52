import { afterAll, beforeAll } from "bun:test";
import { tempDir } from "./env.ts";
import { startRedis, type TestRedis } from "./redis.ts";
import { startDaemon, type TestDaemon } from "./daemon.ts";

export interface Cluster {
  readonly redis: TestRedis;
  /** Temp dir holding every node's root, mount and log. */
  readonly base: string;
  /** The running daemons, in the order of the names given (replace an entry after a restart). */
  readonly nodes: TestDaemon[];
  /** Start (again) the node of this name on the cluster's Redis (at port: the address it had). */
  start(name: string, port?: number): Promise<TestDaemon>;
}

/**
 * Daemons on one redis-server for the tests of the calling describe block: started before them;
 * stopped, unmounted and removed after them. args: extra daemon flags by node name.
 */
export function useCluster(tag: string, names: string[], args: Record<string, string[]> = {}): Cluster {
  // Made in beforeAll, so a block whose tests are all filtered out leaves nothing behind.
  let t: ReturnType<typeof tempDir> | undefined;
  let redis: TestRedis | undefined;
  const nodes: TestDaemon[] = [];
  const cluster: Cluster = {
    get redis() {
      return redis!;
    },
    get base() {
      return t!.path;
    },
    nodes,
    start: (name, port) => startDaemon({ base: t!.path, name, redisUrl: redis!.url, args: args[name], ...(port === undefined ? {} : { port }) }),
  };
  beforeAll(async () => {
    t = tempDir(tag);
    redis = await startRedis();
    for (const n of names) nodes.push(await cluster.start(n));
  });
  afterAll(async () => {
    for (const d of nodes) await d.stop();
    await redis?.stop();
    t?.remove();
  });
  return cluster;
}

export interface OneNode {
  readonly daemon: TestDaemon;
  readonly redis: TestRedis;
  readonly base: string;
}

/** One mcfs node on its own redis-server (see useCluster). */
export function useOneNode(tag: string): OneNode {
  const c = useCluster(tag, ["n1"]);
  return {
    get daemon() {
      return c.nodes[0]!;
    },
    get redis() {
      return c.redis;
    },
    get base() {
      return c.base;
    },
  };
}
