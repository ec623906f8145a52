import { VolumeCapability_AccessMode_Mode as Mode, type VolumeCapability } from "../gen/csi/v1/csi_pb.ts";
import { invalid } from "./errors.ts";
import { BIND_OPTIONS, isBindOption, type BindOption } from "./mounter.ts";

/** Modes that allow one node at a time. */
export const SINGLE_NODE = new Set<Mode>([Mode.SINGLE_NODE_WRITER, Mode.SINGLE_NODE_READER_ONLY, Mode.SINGLE_NODE_SINGLE_WRITER, Mode.SINGLE_NODE_MULTI_WRITER]);
export const READ_ONLY = new Set<Mode>([Mode.SINGLE_NODE_READER_ONLY, Mode.MULTI_NODE_READER_ONLY]);

/** Why mcfs cannot serve a capability, or undefined: every access mode on a filesystem mount; no block devices. */
export function unsupported(c: VolumeCapability): string | undefined {
  if (c.accessType.case === "block") return "block access is not supported (mcfs is a filesystem)";
  if (c.accessType.case !== "mount") return "access type (mount) is missing";
  const m = c.accessMode?.mode ?? Mode.UNKNOWN;
  if (!Mode[m] || m === Mode.UNKNOWN) return "access mode is missing or unknown";
  return undefined;
}

/** The one capability a publish names: present, well-formed and one mcfs serves; its access mode. */
export function requireServable(c: VolumeCapability | undefined, field: string): Mode {
  if (!c) throw invalid(field);
  requireCapabilities([c], field);
  const why = unsupported(c);
  if (why) throw invalid(field, why);
  return c.accessMode!.mode;
}

/** Well-formed capabilities (field names the first that is not); unsupported ones are the caller's to judge. */
export function requireCapabilities(caps: VolumeCapability[], field: string): void {
  if (!caps.length) throw invalid(field);
  caps.forEach((c, i) => {
    if (!c.accessMode) throw invalid(`${field}[${i}].access_mode`);
    if (c.accessType.case === undefined) throw invalid(`${field}[${i}].access_type`, "is required (mount)");
  });
}

/** Flags every bind has, or the default (rw; a read-only publish wins): asking for them changes nothing. */
const ALWAYS = new Set(["nosuid", "nodev", "rw"]);

/**
 * The per-mount options of a publish: read-only when the request or the access mode says so, plus
 * the capability's mount_flags; a flag a bind cannot honour (suid, dev, exec...) is refused, not dropped.
 */
export function bindOptions(c: VolumeCapability, readonly: boolean, field: string): BindOption[] {
  const flags = c.accessType.case === "mount" ? c.accessType.value.mountFlags : [];
  const out = new Set<BindOption>(readonly || READ_ONLY.has(c.accessMode!.mode) ? ["ro"] : []);
  for (const f of flags) {
    if (ALWAYS.has(f)) continue;
    if (!isBindOption(f)) throw invalid(`${field}.mount.mount_flags`, `has ${JSON.stringify(f)}: a bind takes ${[...ALWAYS, ...BIND_OPTIONS].join(", ")} (always nosuid,nodev)`);
    out.add(f);
  }
  return [...out];
}
