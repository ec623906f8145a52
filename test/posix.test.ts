import { afterAll, describe } from "bun:test";
import { posixSuite } from "./suites/posix.ts";
import { fuseUnavailable, tempDir } from "./helpers/env.ts";
import { useOneNode } from "./helpers/node.ts";

const skip = fuseUnavailable();
if (skip) console.warn(`skipping FUSE tests: ${skip}`);

describe("reference: a plain directory", () => {
  const t = tempDir("plain");
  afterAll(() => t.remove());
  posixSuite(() => t.path, "plain");
});

describe.skipIf(!!skip)("mcfs mount", () => {
  const node = useOneNode("posix");
  posixSuite(() => node.daemon.mnt, "mcfs");
});
