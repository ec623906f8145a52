import type { dlopen } from "bun:ffi";
import { loadEmbedded } from "../util/embedded-lib.ts";
import { SHIM_FUNCTIONS } from "./abi.ts";
import shimPath from "../../native/build/mcfs_fuse.so" with { type: "file" };

/** bun:ffi's name for a C parameter or return type of SHIM_FUNCTIONS. */
type FfiOf<C extends string> = C extends `${string}*${string}` ? "ptr" : C extends `${infer T} ${string}` ? T : C;
type FfiArgs<A extends readonly string[]> = { readonly [I in keyof A]: FfiOf<A[I] & string> };
type Fn = (typeof SHIM_FUNCTIONS)[keyof typeof SHIM_FUNCTIONS];
type Symbols = { readonly [K in keyof typeof SHIM_FUNCTIONS]: { readonly args: FfiArgs<(typeof SHIM_FUNCTIONS)[K]["args"]>; readonly returns: FfiOf<(typeof SHIM_FUNCTIONS)[K]["returns"]> } };

const ffiOf = (c: string) => (c.includes("*") ? "ptr" : c.split(" ")[0]!);
const symbols = Object.fromEntries(
  Object.entries(SHIM_FUNCTIONS).map(([name, f]: [string, Fn]) => [name, { args: f.args.map(ffiOf), returns: ffiOf(f.returns) }]),
) as unknown as Symbols;

export type Shim = ReturnType<typeof dlopen<Symbols>>["symbols"];

let loaded: Shim | undefined;

/** Load the shim (embedded in the binary). */
export async function loadShim(): Promise<Shim> {
  loaded ??= loadEmbedded(shimPath, "mcfs_fuse", symbols);
  return loaded;
}
