import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { hostname } from "node:os";
import { randomBytes } from "node:crypto";
import { join } from "node:path";

/**
 * This node's name in the cluster, kept with its root path: the bytes under a root are what a node
 * is, so a restart on another address or port is still the same holder of the same files.
 */
export function nodeIdentity(stateDir: string): string {
  const file = join(stateDir, "node-id");
  try {
    const id = readFileSync(file, "utf8").trim();
    if (id) return id;
  } catch {
    // first start on this root
  }
  mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  const id = `${hostname().replace(/[^A-Za-z0-9.-]/g, "") || "node"}-${randomBytes(4).toString("hex")}`;
  writeFileSync(file, id + "\n", { flag: "wx" });
  return id;
}
