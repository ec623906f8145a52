import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "bun";
import { fuseUnavailable, REPO } from "./helpers/env.ts";
import { useOneNode } from "./helpers/node.ts";

const skip = fuseUnavailable();

function sh(cmd: string, cwd: string): string {
  const r = spawnSync(["sh", "-c", cmd], { cwd, stdout: "pipe", stderr: "pipe", env: { ...process.env, GIT_AUTHOR_NAME: "t", GIT_AUTHOR_EMAIL: "t@t", GIT_COMMITTER_NAME: "t", GIT_COMMITTER_EMAIL: "t@t" } });
  if (r.exitCode !== 0) throw new Error(`${cmd} failed (${r.exitCode}): ${r.stderr}`);
  return r.stdout.toString();
}

/** The programs people run on a shared filesystem, used on the mount as they would be. */
describe.skipIf(!!skip)("tools on the mount", () => {
  const node = useOneNode("tools");

  test("tar: pack a tree in, unpack it again, identical", () => {
    sh(`tar cf ${node.daemon.mnt}/src.tar -C ${REPO} src native`, node.daemon.mnt);
    sh(`mkdir out && tar xf src.tar -C out`, node.daemon.mnt);
    sh(`diff -r ${REPO}/src out/src && diff -r ${REPO}/native/ops.c out/native/ops.c`, node.daemon.mnt);
  });

  test("git: init, commit, gc, fsck, status clean", () => {
    sh(`git init -q repo && cp -r ${REPO}/src repo/ && cd repo && git add -A && git commit -qm first && git gc -q && git fsck --strict`, node.daemon.mnt);
    expect(sh("git status --porcelain", join(node.daemon.mnt, "repo"))).toBe("");
    sh("git mv src moved && git commit -qm second && git checkout -q HEAD~1 && test -d src && git checkout -q -", join(node.daemon.mnt, "repo"));
    expect(sh("git log --oneline", join(node.daemon.mnt, "repo")).trim().split("\n").length).toBe(2);
  });

  test("a compiler: build and run a program", () => {
    fs.writeFileSync(join(node.daemon.mnt, "prog.c"), '#include <stdio.h>\nint main(void){puts("built on mcfs");return 7;}\n');
    sh("cc -O2 -o prog prog.c", node.daemon.mnt);
    const r = spawnSync([join(node.daemon.mnt, "prog")]);
    expect(r.exitCode).toBe(7);
    expect(r.stdout.toString()).toBe("built on mcfs\n");
  });

  test("rsync: copy a tree in, then a no-change checksum pass", () => {
    sh(`rsync -a ${REPO}/src/ ${node.daemon.mnt}/rs/`, node.daemon.mnt);
    sh(`diff -r ${REPO}/src rs`, node.daemon.mnt);
    const out = sh(`rsync -a -c -i --delete ${REPO}/src/ ${node.daemon.mnt}/rs/`, node.daemon.mnt);
    expect(out).toBe("");
  });

  test("coreutils: cp -a keeps modes and times, find, du, mv across directories, rm -rf", () => {
    sh(`cp -a ${REPO}/test cp`, node.daemon.mnt);
    const src = fs.statSync(join(REPO, "test/posix.test.ts"), { bigint: true });
    const cp = fs.statSync(join(node.daemon.mnt, "cp/posix.test.ts"), { bigint: true });
    expect(cp.mtimeNs).toBe(src.mtimeNs);
    expect(cp.mode).toBe(src.mode);
    sh(`find cp -type f | wc -l > count && mkdir a && mv cp a/ && du -s a && rm -rf a`, node.daemon.mnt);
    expect(Number(fs.readFileSync(join(node.daemon.mnt, "count"), "utf8"))).toBeGreaterThan(3);
    expect(fs.existsSync(join(node.daemon.mnt, "a"))).toBe(false);
  });
});
