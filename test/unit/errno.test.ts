import { describe, expect, test } from "bun:test";
import { E, FsError, redisDiskFull, toErrno } from "../../src/util/errno.ts";

describe("the one mapping of errors to errnos", () => {
  const cases: [string, unknown, number][] = [
    ["an FsError keeps its errno", new FsError(E.ENOTEMPTY), E.ENOTEMPTY],
    ["a Node system error keeps its code", Object.assign(new Error("x"), { code: "EACCES" }), E.EACCES],
    ["a lost connection is EIO", Object.assign(new Error("x"), { code: "ECONNRESET" }), E.EIO],
    ["a script's refusal is its errno", new Error("ERR ENOENT no such entry"), E.ENOENT],
    ["Redis out of memory is no space", new Error("OOM command not allowed when used memory > 'maxmemory'."), E.ENOSPC],
    ["Redis unable to append on a full disk is no space", new Error("MISCONF Errors writing to the AOF file: No space left on device script: 9d33, on @user_script:162."), E.ENOSPC],
    ["Redis unable to persist for another reason is EIO", new Error("MISCONF Errors writing to the AOF file: Permission denied"), E.EIO],
    ["anything else is EIO", new Error("something odd"), E.EIO],
  ];
  for (const [what, err, errno] of cases) test(what, () => expect(toErrno(err)).toBe(errno));

  test("redisDiskFull knows Redis's refusals for a full disk, and nothing else", () => {
    expect(redisDiskFull("MISCONF Errors writing to the AOF file: No space left on device")).toBe(true);
    expect(redisDiskFull("MISCONF Errors writing to the AOF file: Disk quota exceeded")).toBe(true);
    expect(redisDiskFull("MISCONF Errors writing to the AOF file: Input/output error")).toBe(false);
    expect(redisDiskFull("ERR No space left on device")).toBe(false);
  });
});
