import { createMemorySpace, createMemoryStore } from "../../src/meta/memory-store.ts";
import { harnessOf, storeContract } from "../contract/store-contract.ts";

storeContract("memory", async () => {
  const space = createMemorySpace();
  return harnessOf((nodeId) => createMemoryStore({ space, nodeId }));
});
