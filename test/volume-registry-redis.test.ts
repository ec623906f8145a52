import { afterAll, beforeAll } from "bun:test";
import { createRedisVolumeRegistry } from "../src/csi/redis-volume-registry.ts";
import { connectRedis } from "../src/meta/redis-connect.ts";
import { volumeRegistryContract } from "./contract/volume-registry-contract.ts";
import { startRedis, type TestRedis } from "./helpers/redis.ts";

/** One redis-server for the file, emptied before each test (the registry's prefix is fixed). */
let redis: TestRedis | undefined;
beforeAll(async () => {
  redis = await startRedis();
});
afterAll(async () => {
  await redis?.stop();
});

volumeRegistryContract(
  "redis",
  async () => {
    await redis!.cli("FLUSHALL");
    // As the CSI controller makes it (src/daemon/csi-controller-role.ts).
    const registry = createRedisVolumeRegistry(await connectRedis({ url: redis!.url }));
    return { registry, cleanup: () => registry.close() };
  },
);
