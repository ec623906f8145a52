import { createMemorySpace, createMemoryStore } from "../../src/meta/memory-store.ts";
import type { MetadataStore } from "../../src/meta/store.ts";
import { storeContract } from "../contract/store-contract.ts";

storeContract("memory", async () => {
  const space = createMemorySpace();
  const opened: MetadataStore[] = [];
  const open = async (nodeId: string) => {
    const s = createMemoryStore({ space, nodeId });
    opened.push(s);
    return s;
  };
  return {
    store: await open("node-a"),
    open,
    async cleanup() {
      await Promise.all(opened.map((s) => s.close()));
    },
  };
});
