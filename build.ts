/**
 * Build everything from a clean clone: the FUSE shim (libfuse3 linked statically), generated protobuf
 * code, and the single binary dist/mcfs. Usage: bun run build.ts [--shim-only]
 */
import { $ } from "bun";
import { existsSync, mkdirSync } from "node:fs";
import { abiHeader } from "./native/gen-abi.ts";

const root = import.meta.dir;
mkdirSync(`${root}/native/build`, { recursive: true });

const cflags = (await $`pkg-config --cflags fuse3`.nothrow().quiet()).stdout.toString().trim() || "-I/usr/include/fuse3";
const lib = ["/usr/lib/x86_64-linux-gnu/libfuse3.a", "/usr/lib/aarch64-linux-gnu/libfuse3.a", "/usr/lib/libfuse3.a"].find(existsSync);
if (!lib) throw new Error("libfuse3.a not found: install libfuse3-dev (apt-get install libfuse3-dev)");
// The shim's C header for the request/reply layout and its exported functions comes from the same spec
// session.ts and native.ts read; -Wmissing-prototypes fails an exported mcfs_* function the spec lacks.
await Bun.write(`${root}/native/build/mcfs_abi.h`, abiHeader());
const shimSources = ["session.c", "ops.c", "queue.c", "ids.c", "reply.c", "io.c", "notify.c", "entries.c", "listings.c", "creates.c", "grants.c", "killpriv.c", "passthrough.c"].map((f) => `${root}/native/${f}`);
await $`cc -O2 -Wall -Wextra -Wmissing-prototypes -Werror -fPIC -shared ${{ raw: cflags }} -I${root}/native/build -o ${root}/native/build/mcfs_fuse.so ${shimSources} -Wl,--version-script=${root}/native/mcfs_fuse.map ${lib} -lpthread`;
await $`cc -O2 -Wall -Wextra -Werror -fPIC -shared -o ${root}/native/build/mcfs_beneath.so ${root}/native/beneath.c ${root}/native/beneath-pool.c -lpthread`;
console.log("built native/build/mcfs_fuse.so, native/build/mcfs_beneath.so");
if (process.argv.includes("--shim-only")) process.exit(0);

if (existsSync(`${root}/proto`)) {
  await $`${root}/node_modules/.bin/buf generate`.cwd(root);
  console.log("generated src/gen");
}

mkdirSync(`${root}/dist`, { recursive: true });
await $`${process.execPath} build --compile --minify --bytecode --format=esm --target=bun --outfile ${root}/dist/mcfs ${root}/src/cli/main.ts`.cwd(root);
console.log("built dist/mcfs");
