import { realpathSync } from "node:fs";
import { dirname } from "node:path";
import { fsError } from "../util/errno.ts";

/**
 * The local path of a namespace path a peer asked for, refused unless it stays inside root: it must
 * be absolute, without "." or ".." parts or NUL, and its parent directory must resolve (following
 * symlinks) inside root. The last component is opened with O_NOFOLLOW by the callers.
 */
export function confine(root: string, realRoot: string, path: string): string {
  if (!path.startsWith("/") || path.includes("\0")) throw fsError("EACCES", `path ${JSON.stringify(path)} is not an absolute namespace path`);
  const parts = path.split("/").filter(Boolean);
  if (parts.some((p) => p === "." || p === "..")) throw fsError("EACCES", `path ${JSON.stringify(path)} leaves the root`);
  if (parts.length === 0) return root;
  if (parts[0] === ".mcfs") throw fsError("EACCES", "mcfs's own state is not served");
  const full = `${root}/${parts.join("/")}`;
  let parent: string;
  try {
    parent = realpathSync(dirname(full));
  } catch {
    throw fsError("ENOENT");
  }
  if (parent !== realRoot && !parent.startsWith(realRoot + "/")) throw fsError("EACCES", `path ${JSON.stringify(path)} leaves the root through a symlink`);
  return `${parent}/${parts.at(-1)}`;
}
