import { createMemoryVolumeRegistry } from "../../src/csi/memory-volume-registry.ts";
import { volumeRegistryContract } from "../contract/volume-registry-contract.ts";

volumeRegistryContract("memory", async () => {
  const registry = createMemoryVolumeRegistry();
  return { registry, cleanup: () => registry.close() };
});
