import { describe, expect, test } from "bun:test";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { ATTR, DIRENT_AFTER_ATTR, IO_COUNTERS, OPEN_FLAGS, OPS, REQ_ARGS_AT, REQ_HEADER_BYTES, REQ_U32, REQ_U64, STATFS, reqOffset } from "../../src/fuse/abi.ts";
import { abiHeader, snake } from "../../native/gen-abi.ts";

/**
 * session.ts reads requests at the offsets abi.ts computes; the shim writes them where the C compiler
 * puts the fields of the generated struct. Compile the header and ask the compiler, so padding or a
 * field of the wrong width cannot make the two disagree unnoticed.
 */
describe("FUSE request/reply layout", () => {
  test("the C compiler places every field where abi.ts says", () => {
    const dir = mkdtempSync(join(tmpdir(), "mcfs-abi-"));
    try {
      const probes: [string, string, number][] = [["sizeof", "sizeof(struct mcfs_req)", REQ_HEADER_BYTES]];
      for (const f of [...REQ_U32, ...REQ_U64]) probes.push([f, `offsetof(struct mcfs_req, ${f})`, reqOffset(f)]);
      for (const [op, spec] of Object.entries(OPS)) {
        probes.push([`OP_${op}`, `OP_${op.toUpperCase()}`, spec.code]);
        spec.args.forEach((a, i) => probes.push([`${op}.${a}`, `offsetof(struct mcfs_req, ${op}.${snake(a)})`, REQ_ARGS_AT + i * 8]));
      }
      probes.push(["A_N", "A_N", ATTR.length], ["DIRENT_NAME", "DIRENT_NAME", ATTR.length + DIRENT_AFTER_ATTR.length]);
      probes.push(["STATFS_N", "STATFS_N", STATFS.length], ["IO_N", "IO_N", IO_COUNTERS.length]);
      for (const [k, v] of Object.entries(OPEN_FLAGS)) probes.push([k, `OPEN_${snake(k).toUpperCase()}`, v]);

      writeFileSync(join(dir, "mcfs_abi.h"), abiHeader());
      writeFileSync(join(dir, "probe.c"), `#include <stddef.h>\n#include <stdio.h>\n#include "mcfs_abi.h"\nint main(void) {\n${probes.map(([name, expr]) => `\tprintf("%s %ld\\n", "${name}", (long)(${expr}));`).join("\n")}\n\treturn 0;\n}\n`);
      const cc = Bun.spawnSync(["cc", "-std=c11", "-Wall", "-Werror", "-o", join(dir, "probe"), join(dir, "probe.c")], { stderr: "pipe" });
      expect(cc.stderr.toString()).toBe("");
      const out = Bun.spawnSync([join(dir, "probe")]).stdout.toString().trim().split("\n");
      const measured = Object.fromEntries(out.map((l) => [l.split(" ")[0], Number(l.split(" ")[1])]));
      expect(measured).toEqual(Object.fromEntries(probes.map(([name, , want]) => [name, want])));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test("opcodes are distinct and every operation's arguments fit the slots", () => {
    const codes = Object.values(OPS).map((o) => o.code);
    expect(new Set(codes).size).toBe(codes.length);
    for (const o of Object.values(OPS)) {
      expect(o.args.length * 8 + REQ_ARGS_AT).toBeLessThanOrEqual(REQ_HEADER_BYTES);
      expect(o.strings.length).toBeLessThanOrEqual(2);
    }
  });
});
