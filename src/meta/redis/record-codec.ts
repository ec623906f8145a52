/** How the store reads what the scripts keep (keys.ts): every field a decimal string, some optional. */
import type { DirListing, Holders, Inode } from "../store.ts";
import { fsError } from "../../util/errno.ts";

/** An inode record (P i:{ino}); fields older records lack take their defaults. */
export function parseRecord(ino: number, f: Record<string, string>): Inode {
  const rec: Inode = {
    ino,
    mode: Number(f.m),
    uid: Number(f.u ?? 0),
    gid: Number(f.g ?? 0),
    rdev: Number(f.r ?? 0),
    size: Number(f.s ?? 0),
    nlink: Number(f.n ?? 1),
    atime: BigInt(f.a ?? "0"),
    mtime: BigInt(f.t ?? "0"),
    ctime: BigInt(f.c ?? "0"),
    version: Number(f.v ?? 1),
    gen: f.gn ?? "",
    parent: Number(f.p ?? 0),
    name: f.nm ?? "",
  };
  if (f.l !== undefined) rec.target = f.l;
  return rec;
}

/** A flat HGETALL reply of a script (field, value, ...) from index from, as an object. */
export function pairs(flat: string[], from = 0): Record<string, string> {
  const o: Record<string, string> = {};
  for (let i = from; i + 1 < flat.length; i += 2) o[flat[i]!] = flat[i + 1]!;
  return o;
}

/**
 * The fields of a record as scripts answer it (lib.lua's packed, given this list by scripts.ts): one
 * string, "{ino}\0{value}\0{value}..." in this order, "" for a field the record lacks. None of the
 * values can hold a NUL (numbers, a hex identity, a name, a symlink's target). One reply to parse
 * instead of two per field: reading records is most of what an open or a listing costs the node.
 */
export const RECORD_FIELDS = ["m", "u", "g", "r", "s", "n", "a", "t", "c", "v", "gn", "p", "nm", "l"] as const;

/** A record as scripts answer it (packed, above); undefined when there is none. */
export function scriptRecord(r: unknown): Inode | undefined {
  if (typeof r !== "string") return undefined;
  const v = r.split("\0");
  const f: Record<string, string> = {};
  for (let i = 0; i < RECORD_FIELDS.length; i++) if (v[i + 1]) f[RECORD_FIELDS[i]!] = v[i + 1]!;
  return f.m === undefined ? undefined : parseRecord(Number(v[0]), f);
}

/** scriptRecord, ENOENT when there is no record. */
export function parseScriptRecord(r: unknown): Inode {
  const rec = scriptRecord(r);
  if (!rec) throw fsError("ENOENT");
  return rec;
}

/** P loc:{ino} and P cc:{ino}. */
export function parseHolders(data: Record<string, string>, cached: Record<string, string>): Holders {
  return {
    data: new Map(Object.entries(data).map(([k, v]) => [k, Number(v)])),
    cached: new Map(
      Object.entries(cached).map(([k, v]) => {
        const [version, startedAt] = v.split(" ").map(Number);
        return [k, { version: version ?? 0, startedAt: startedAt ?? 0 }];
      }),
    ),
  };
}

/** P d:{ino}: name -> "{child ino}:{mode >> 12}". */
export function parseEntries(ents: Record<string, string>): DirListing[] {
  return Object.entries(ents).map(([name, v]) => {
    const c = v.indexOf(":");
    return { name, ino: Number(v.slice(0, c)), type: Number(v.slice(c + 1)) };
  });
}

/** A member of P l:{ino}: "{parent ino}/{name}". */
export function parseExtraName(e: string): { parent: number; name: string } {
  const slash = e.indexOf("/");
  return { parent: Number(e.slice(0, slash)), name: e.slice(slash + 1) };
}
