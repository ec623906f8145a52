import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { fuseUnavailable, waitFor } from "./helpers/env.ts";
import type { TestDaemon } from "./helpers/daemon.ts";
import { useCluster } from "./helpers/node.ts";

const skip = fuseUnavailable();

/** A file's bytes belong to its inode, whatever name they were written or removed under, on any node. */
describe.skipIf(!!skip)("hard links across nodes", () => {
  const cluster = useCluster("links", ["a", "b", "c"]);

  test("A links f as g; B writes g; f is removed: g keeps B's bytes on every node", () => {
    const [a, b, c] = cluster.nodes as [TestDaemon, TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "h1"));
    fs.writeFileSync(join(a.mnt, "h1/f"), "v1\n");
    fs.linkSync(join(a.mnt, "h1/f"), join(a.mnt, "h1/g"));
    fs.writeFileSync(join(b.mnt, "h1/g"), "v2 from b\n");
    for (const n of [a, b, c]) expect(fs.readFileSync(join(n.mnt, "h1/f"), "utf8")).toBe("v2 from b\n");
    fs.unlinkSync(join(c.mnt, "h1/f"));
    for (const n of [a, b, c]) {
      expect(fs.readFileSync(join(n.mnt, "h1/g"), "utf8")).toBe("v2 from b\n");
      expect(fs.statSync(join(n.mnt, "h1/g")).nlink).toBe(1);
    }
    expect(fs.readFileSync(join(b.root, "h1/g"), "utf8")).toBe("v2 from b\n");
  });

  test("A links f as g; B writes g: A's disk keeps the old bytes under neither name", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "h4"));
    fs.writeFileSync(join(a.mnt, "h4/f"), "old\n");
    fs.linkSync(join(a.mnt, "h4/f"), join(a.mnt, "h4/g"));
    fs.writeFileSync(join(b.mnt, "h4/g"), "new from b\n");
    await waitFor("A to drop its stale copy under both names", () => !fs.existsSync(join(a.root, "h4/f")) && !fs.existsSync(join(a.root, "h4/g")));
    for (const n of cluster.nodes) for (const name of ["f", "g"]) expect(fs.readFileSync(join(n.mnt, "h4", name), "utf8")).toBe("new from b\n");
  });

  test("ln works on a node that does not hold the file; the holder keeps the bytes under both names", () => {
    const [a, , c] = cluster.nodes as [TestDaemon, TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "h2"));
    fs.writeFileSync(join(a.mnt, "h2/f"), "a's bytes\n");
    fs.linkSync(join(c.mnt, "h2/f"), join(c.mnt, "h2/h"));
    expect(fs.readFileSync(join(c.mnt, "h2/h"), "utf8")).toBe("a's bytes\n");
    expect(fs.statSync(join(a.mnt, "h2/f")).nlink).toBe(2);
    fs.unlinkSync(join(c.mnt, "h2/f"));
    for (const n of cluster.nodes) expect(fs.readFileSync(join(n.mnt, "h2/h"), "utf8")).toBe("a's bytes\n");
    expect(fs.readFileSync(join(a.root, "h2/h"), "utf8")).toBe("a's bytes\n");
  });

  test("a link made on another node right after a close here: this node's stat shows both names at once", () => {
    const [a, , c] = cluster.nodes as [TestDaemon, TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "h5"));
    // Each close's release is answered by A's shim and taken in by its JS a moment later: until
    // then A counts the file open, and must not hold the link's change back for it.
    for (let i = 0; i < 20; i++) {
      fs.writeFileSync(join(a.mnt, "h5", `f${i}`), `${i}`);
      fs.linkSync(join(c.mnt, "h5", `f${i}`), join(c.mnt, "h5", `g${i}`));
      expect(fs.statSync(join(a.mnt, "h5", `f${i}`)).nlink).toBe(2);
    }
  });

  test("a name removed on one node does not come back when the node that held it restarts", async () => {
    let a = cluster.nodes[0]!;
    const [, b, c] = cluster.nodes as [TestDaemon, TestDaemon, TestDaemon];
    fs.mkdirSync(join(a.mnt, "h3"));
    fs.writeFileSync(join(a.mnt, "h3/f"), "v1\n");
    fs.linkSync(join(a.mnt, "h3/f"), join(a.mnt, "h3/g"));
    fs.writeFileSync(join(b.mnt, "h3/g"), "v2\n");
    fs.unlinkSync(join(c.mnt, "h3/g"));
    await a.stop();
    a = cluster.nodes[0] = await cluster.start("a");
    for (const n of [a, b, c]) {
      expect(fs.readdirSync(join(n.mnt, "h3"))).toEqual(["f"]);
      expect(fs.readFileSync(join(n.mnt, "h3/f"), "utf8")).toBe("v2\n");
    }
  });
});
