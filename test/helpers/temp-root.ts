import { afterEach } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { openLocalDir, type LocalDir } from "../../src/local/local-dir.ts";

/**
 * A LocalDir over a fresh temporary directory (base), for each test that asks: closed and removed
 * after the test.
 */
export function useTempRoot(prefix: string): () => { root: LocalDir; base: string } {
  let made: { root: LocalDir; base: string } | undefined;
  afterEach(() => {
    if (!made) return;
    made.root.close();
    fs.rmSync(made.base, { recursive: true, force: true });
    made = undefined;
  });
  return () => {
    const base = fs.mkdtempSync(join(tmpdir(), prefix));
    made = { root: openLocalDir(base), base };
    return made;
  };
}
