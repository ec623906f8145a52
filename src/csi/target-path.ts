import { invalid } from "./errors.ts";

/**
 * The components of target beneath podsDir (kubelet's pods directory), or InvalidArgument naming
 * target_path and why. Only clean absolute paths are taken: the walk that follows opens exactly these
 * names one by one, so nothing may be left to interpretation (., .., //, a trailing /).
 */
export function targetComponents(target: string, podsDir: string): string[] {
  const why = problem(target, podsDir);
  if (why) throw invalid("target_path", `${JSON.stringify(target)} ${why}`);
  return target.slice(podsDir.length + 1).split("/");
}

function problem(target: string, podsDir: string): string | undefined {
  if (target.includes("\0")) return "must not contain a NUL byte";
  if (!target.startsWith("/")) return "must be an absolute path";
  if (target.includes("//")) return "must not contain //";
  if (target.length > 1 && target.endsWith("/")) return "must not end with /";
  if (target.split("/").some((c) => c === "." || c === "..")) return "must not contain . or .. components";
  if (!target.startsWith(`${podsDir}/`)) return `must be beneath kubelet's pods directory ${podsDir}`;
  return undefined;
}
