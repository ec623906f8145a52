import { afterAll, describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { tmpdir } from "node:os";
import { mayKeepPrivileges, outsideGroup, withoutPrivileges } from "../../src/vfs/privileges.ts";

describe("withoutPrivileges", () => {
  test.each([
    [0o106777, 0o100777],
    [0o104776, 0o100776],
    [0o102776, 0o100776],
    // setgid without group execute: a mandatory-lock mark, kept.
    [0o102766, undefined],
    [0o100755, undefined],
    // Not a regular file: a directory's setgid is inheritance of its group.
    [0o042775, undefined],
  ])("%o -> %o", (mode, want) => expect(withoutPrivileges(mode)).toBe(want));
  test("setgid without group execute goes when the one changing the file is an outsider (asked only then)", () => {
    let asked = 0;
    const outsider = () => (asked++, true);
    expect(withoutPrivileges(0o102766, outsider)).toBe(0o100766);
    expect(withoutPrivileges(0o106777, outsider)).toBe(0o100777);
    expect(withoutPrivileges(0o100766, outsider)).toBeUndefined();
    expect(asked).toBe(1);
  });
});

describe("outsideGroup", () => {
  const proc = fs.mkdtempSync(join(tmpdir(), "groups-"));
  afterAll(() => fs.rmSync(proc, { recursive: true }));
  fs.mkdirSync(join(proc, "20"));
  fs.writeFileSync(join(proc, "20", "status"), "Name:\tx\nGid:\t5\t5\t5\t5\nGroups:\t7 100 \nCapEff:\t0\n");
  fs.mkdirSync(join(proc, "21"));
  fs.writeFileSync(join(proc, "21", "status"), "Name:\tx\nGroups:\t\n");
  test.each([
    [20, 5, false],
    [20, 100, false],
    [20, 7, false],
    [20, 8, true],
    [21, 8, true],
    // No supplementary groups is not group 0.
    [21, 0, true],
    // Gone: an outsider.
    [22, 8, true],
  ])("pid %d, group %d -> %p", (pid, gid, want) => expect(outsideGroup({ uid: 1, gid: 5, pid }, gid, proc)).toBe(want));
});

describe("mayKeepPrivileges", () => {
  const proc = fs.mkdtempSync(join(tmpdir(), "caps-"));
  afterAll(() => fs.rmSync(proc, { recursive: true }));
  const status = (pid: number, capEff: string) => {
    fs.mkdirSync(join(proc, String(pid)));
    fs.writeFileSync(join(proc, String(pid), "status"), `Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t${capEff}\nCapBnd:\t000001ffffffffff\n`);
  };
  status(10, "000001ffffffffff");
  status(11, "0000000000000000");
  status(12, "0000000000000010");
  status(13, "00000000000000ef");
  test.each([
    [10, true],
    [11, false],
    [12, true],
    [13, false],
    // Gone: nothing to keep.
    [14, false],
  ])("pid %d -> %p", (pid, want) => expect(mayKeepPrivileges({ uid: 0, gid: 0, pid }, proc)).toBe(want));
  test("this process, as root, may", () => expect(mayKeepPrivileges({ uid: 0, gid: 0, pid: process.pid })).toBe(process.getuid?.() === 0));
});
