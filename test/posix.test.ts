import { afterAll, beforeAll, describe } from "bun:test";
import { posixSuite } from "./suites/posix.ts";
import { fuseUnavailable, tempDir } from "./helpers/env.ts";
import { startRedis, type TestRedis } from "./helpers/redis.ts";
import { startDaemon, type TestDaemon } from "./helpers/daemon.ts";

const skip = fuseUnavailable();
if (skip) console.warn(`skipping FUSE tests: ${skip}`);

describe("reference: a plain directory", () => {
  const t = tempDir("plain");
  afterAll(() => t.remove());
  posixSuite(() => t.path, "plain");
});

describe.skipIf(!!skip)("mcfs mount", () => {
  const t = tempDir("posix");
  let redis: TestRedis;
  let d: TestDaemon;
  beforeAll(async () => {
    redis = await startRedis();
    d = await startDaemon({ base: t.path, name: "n1", redisUrl: redis.url });
  });
  afterAll(async () => {
    await d?.stop();
    await redis?.stop();
    t.remove();
  });
  posixSuite(() => d.mnt, "mcfs");
});
