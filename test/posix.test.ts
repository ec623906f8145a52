import { afterAll, beforeAll, describe } from "bun:test";
import { posixSuite } from "./suites/posix.ts";
import { fuseUnavailable, tempDir } from "./helpers/env.ts";
import { useOneNode } from "./helpers/node.ts";
import { startDaemon, type TestDaemon } from "./helpers/daemon.ts";

const skip = fuseUnavailable();
if (skip) console.warn(`skipping FUSE tests: ${skip}`);

describe("reference: a plain directory", () => {
  let t: ReturnType<typeof tempDir> | undefined;
  beforeAll(() => {
    t = tempDir("plain");
  });
  afterAll(() => t?.remove());
  posixSuite(() => t!.path, "plain");
});

describe.skipIf(!!skip)("mcfs mount", () => {
  const node = useOneNode("posix");
  posixSuite(() => node.daemon.mnt, "mcfs");
});

// With its private Redis a node writes some metadata behind its replies: the same behaviour is owed.
describe.skipIf(!!skip)("mcfs mount, private Redis", () => {
  let t: ReturnType<typeof tempDir> | undefined;
  let d: TestDaemon | undefined;
  beforeAll(async () => {
    t = tempDir("posix-solo");
    d = await startDaemon({ base: t.path, name: "solo" });
  });
  afterAll(async () => {
    await d?.stop();
    t?.remove();
  });
  posixSuite(() => d!.mnt, "mcfs solo");
});
