import { chmodSync, existsSync, mkdtempSync, rmSync } from "node:fs";
import { release, tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { createServer } from "node:net";

export const REPO = resolve(import.meta.dir, "../..");
export const MCFS = process.env.MCFS_BIN ?? join(REPO, "dist/mcfs");

/** FUSE passthrough came with Linux 6.9: on such a kernel mcfs has it on. */
export function kernelHasPassthrough(): boolean {
  const [major = 0, minor = 0] = release().split(".").map(Number);
  return major > 6 || (major === 6 && minor >= 9);
}

/** Why FUSE tests cannot run here, or undefined when they can. */
export function fuseUnavailable(): string | undefined {
  if (!existsSync("/dev/fuse")) return "/dev/fuse is absent";
  if (process.getuid?.() !== 0) return "tests mount FUSE and must run as root";
  if (!Bun.which("redis-server")) return "redis-server is not installed";
  if (!existsSync(MCFS)) throw new Error(`${MCFS} is missing: build first (bun run build.ts)`);
  return undefined;
}

export function tempDir(tag: string): { path: string; remove(): void } {
  const path = mkdtempSync(join(tmpdir(), `mcfs-${tag}-`));
  // Other users (the permission tests run as nobody) must be able to reach what is inside.
  chmodSync(path, 0o755);
  return { path, remove: () => rmSync(path, { recursive: true, force: true }) };
}

/** A TCP port free right now (bound to port 0 and released). */
export async function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.listen(0, "127.0.0.1", () => {
      const a = s.address();
      s.close(() => (typeof a === "object" && a ? res(a.port) : rej(new Error("no port"))));
    });
  });
}

/** Wait until cond() is true, checking often; fail with what was awaited after timeoutMs. */
export async function waitFor(what: string, cond: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await Bun.sleep(10);
  }
}

/** The error code a synchronous call fails with, or undefined when it succeeds. */
export function errCode(fn: () => unknown): string | undefined {
  try {
    fn();
    return undefined;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code;
  }
}
