import { existsSync, readFileSync } from "node:fs";
import { spawnSync } from "bun";

/**
 * What a user other than root goes through to mount: the setuid fusermount3, which mounts and
 * unmounts on their behalf and allows allow_other only where /etc/fuse.conf says user_allow_other.
 */

export const FUSE_CONF = "/etc/fuse.conf";

export const isRoot = (): boolean => process.geteuid?.() === 0;

/**
 * Whether fusermount3 lets this user mount with allow_other: a line `user_allow_other` in the
 * config, read as fusermount3 reads it (a `#` starts a comment, surrounding blanks do not count).
 */
export function userAllowOther(conf = FUSE_CONF): boolean {
  let text: string;
  try {
    text = readFileSync(conf, "utf8");
  } catch {
    return false;
  }
  return text.split("\n").some((l) => l.replace(/#.*/, "").trim() === "user_allow_other");
}

/** Where fusermount3 is: libfuse looks in /usr/bin before $PATH. */
function fusermount(): string {
  for (const p of ["/usr/bin/fusermount3", "/bin/fusermount3"]) if (existsSync(p)) return p;
  const found = Bun.which("fusermount3");
  if (!found) throw new Error("fusermount3 is not installed (package fuse3): a user other than root cannot unmount without it");
  return found;
}

/** Lazily unmount path through fusermount3 (a mount of this user only); throws with its reason. */
export function fusermountUnmount(path: string): void {
  const r = spawnSync([fusermount(), "-u", "-z", "--", path], { stdin: "ignore", stdout: "ignore", stderr: "pipe" });
  if (r.exitCode !== 0) throw new Error(`fusermount3 -u -z ${path} failed: ${r.stderr.toString().trim() || `exit code ${r.exitCode}`}`);
}
