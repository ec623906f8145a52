import { describe, expect, test } from "bun:test";
import * as fs from "node:fs";
import { join } from "node:path";
import { spawnSync } from "bun";
import type { TestDaemon } from "./helpers/daemon.ts";
import { fuseUnavailable, kernelHasPassthrough, waitFor } from "./helpers/env.ts";
import { scrape } from "./helpers/metrics.ts";
import { useCluster } from "./helpers/node.ts";

const skip = fuseUnavailable();
const kernelHasIt = kernelHasPassthrough();

const sh = (cmd: string) => {
  const p = spawnSync(["sh", "-c", cmd]);
  if (p.exitCode !== 0) throw new Error(`${cmd}: ${p.stderr.toString()}`);
  return p.stdout.toString();
};

/**
 * A writer of this node's own file is read and written by the kernel itself (passthrough.c): mcfs
 * never sees its writes, yet each close publishes them, and readers on the node and elsewhere read
 * what was written.
 */
describe.skipIf(!!skip)("passthrough", () => {
  const cluster = useCluster("pt", ["a", "b"], { a: ["--metrics-port", "0"] });
  /** A C program built from src, in the test's directory: its path. */
  const program = (name: string, src: string) => {
    const bin = join(cluster.base, name);
    fs.writeFileSync(`${bin}.c`, src);
    sh(`cc -o ${bin} ${bin}.c`);
    return bin;
  };

  test("on a kernel that has it, the writes of a create and of a writer's open pass through", async () => {
    const [a] = cluster.nodes as [TestDaemon, TestDaemon];
    const before = await scrape(a);
    fs.writeFileSync(join(a.mnt, "p0"), "made\n");
    fs.appendFileSync(join(a.mnt, "p0"), "appended\n");
    const after = await scrape(a);
    expect(after("mcfs_fuse_passthrough")).toBe(kernelHasIt ? 1 : 0);
    if (kernelHasIt) expect(after("mcfs_passthrough_opens_total") - before("mcfs_passthrough_opens_total")).toBeGreaterThanOrEqual(2);
    expect(fs.readFileSync(join(a.mnt, "p0"), "utf8")).toBe("made\nappended\n");
  });

  test("what a dup of the handle writes after the first close is published at its own close", () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const f = join(a.mnt, "p1");
    // fd 3 closes first (a flush that publishes "one"); fd 4, the same open file, writes on and closes.
    sh(`exec 3>${f}; exec 4>&3; printf one >&3; exec 3>&-; printf two >&4; exec 4>&-`);
    expect(fs.readFileSync(join(b.mnt, "p1"), "utf8")).toBe("onetwo");
    // And again on a file that already exists (an open, not a create).
    sh(`exec 3>>${f}; exec 4>&3; printf three >&3; exec 3>&-; printf four >&4; exec 4>&-`);
    expect(fs.readFileSync(join(b.mnt, "p1"), "utf8")).toBe("onetwothreefour");
  });

  test("a reader opened while a writer is open on the node reads the writer's bytes as they are written", () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const f = join(a.mnt, "p2");
    const w = fs.openSync(f, "w");
    fs.writeSync(w, "abc");
    const r = fs.openSync(f, "r");
    const buf = Buffer.alloc(16);
    expect(buf.toString("utf8", 0, fs.readSync(r, buf, 0, 16, 0))).toBe("abc");
    fs.writeSync(w, "def");
    expect(buf.toString("utf8", 0, fs.readSync(r, buf, 0, 16, 0))).toBe("abcdef");
    expect(fs.fstatSync(r).size).toBe(6);
    fs.closeSync(r);
    fs.closeSync(w);
    expect(fs.readFileSync(join(b.mnt, "p2"), "utf8")).toBe("abcdef");
  });

  test("a writer opened while a reader of another node's copy is open on the node: both work, the writer's bytes go everywhere", () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    fs.writeFileSync(join(b.mnt, "p3"), "from b, version one\n");
    const f = join(a.mnt, "p3");
    // A reads a copy of B's file (not passed through); the writer's open must then not be either.
    const r = fs.openSync(f, "r");
    const buf = Buffer.alloc(64);
    expect(buf.toString("utf8", 0, fs.readSync(r, buf, 0, 64, 0))).toBe("from b, version one\n");
    const w = fs.openSync(f, "r+");
    fs.writeSync(w, "FROM A", 0);
    fs.closeSync(w);
    expect(buf.toString("utf8", 0, fs.readSync(r, buf, 0, 64, 0))).toBe("FROM A, version one\n");
    fs.closeSync(r);
    expect(fs.readFileSync(join(b.mnt, "p3"), "utf8")).toBe("FROM A, version one\n");
    // With no handle left, the next writer passes through again, and the one after it on B sees it.
    fs.writeFileSync(f, "again from a\n");
    expect(fs.readFileSync(join(b.mnt, "p3"), "utf8")).toBe("again from a\n");
  });

  test("writes through a shared mapping are published at the close that follows them", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const f = join(a.mnt, "p4");
    fs.writeFileSync(f, "........");
    // B keeps a copy of this version: only a new one published makes it read anything else.
    expect(fs.readFileSync(join(b.mnt, "p4"), "utf8")).toBe("........");
    const bin = program(
      "mapwrite",
      `#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int fd = open(argv[1], O_RDWR);
  char *m = mmap(0, 8, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  if (argc < 2 || fd < 0 || m == MAP_FAILED) return 1;
  memcpy(m, "MAPPED", 6);
  if (munmap(m, 8) != 0) return 1;
  return close(fd) != 0;
}
`,
    );
    sh(`${bin} ${f}`);
    expect(fs.readFileSync(join(b.mnt, "p4"), "utf8")).toBe("MAPPED..");
  });



  test("a read-only handle sharing a writer's backing file (opened for writing by the daemon) still cannot write through it", async () => {
    const [a, b] = cluster.nodes as [TestDaemon, TestDaemon];
    const f = join(a.mnt, "p5");
    const before = await scrape(a);
    const w = fs.openSync(f, "w");
    fs.writeSync(w, "the writer's bytes");
    // Opened while the writer is: in passthrough, on the same backing file. write() must fail with
    // EBADF, a shared writable mapping with EACCES, and mprotect cannot make a read-only one writable.
    const bin = program(
      "rowrite",
      `#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int fd = open(argv[1], O_RDONLY);
  if (argc < 2 || fd < 0) return 1;
  int w = write(fd, "X", 1) < 0 ? errno : 0;
  void *m = mmap(0, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
  int mw = m == MAP_FAILED ? errno : 0;
  void *r = mmap(0, 4096, PROT_READ, MAP_SHARED, fd, 0);
  int mp = r == MAP_FAILED ? -1 : mprotect(r, 4096, PROT_READ | PROT_WRITE) < 0 ? errno : 0;
  printf("%d %d %d\\n", w, mw, mp);
  return 0;
}
`,
    );
    expect(sh(`${bin} ${f}`).trim()).toBe(`${9} ${13} ${13}`);
    // Both the writer and the reader were passed through.
    if (kernelHasIt) expect((await scrape(a))("mcfs_passthrough_opens_total") - before("mcfs_passthrough_opens_total")).toBe(2);
    fs.closeSync(w);
    expect(fs.readFileSync(join(b.mnt, "p5"), "utf8")).toBe("the writer's bytes");
  });

  test("a write-only create (its backing file opened for reading too by the daemon) cannot read through it", async () => {
    const [a] = cluster.nodes as [TestDaemon, TestDaemon];
    const before = await scrape(a);
    // read() must fail with EBADF and a mapping for reading with EACCES: the kernel checks the caller's handle.
    const bin = program(
      "woread",
      `#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <sys/mman.h>
#include <unistd.h>
int main(int argc, char **argv) {
  int fd = open(argv[1], O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (argc < 2 || fd < 0 || write(fd, "secret", 6) != 6) return 1;
  char b[8];
  int r = read(fd, b, sizeof b) < 0 ? errno : 0;
  int p = pread(fd, b, sizeof b, 0) < 0 ? errno : 0;
  void *m = mmap(0, 4096, PROT_READ, MAP_SHARED, fd, 0);
  int mr = m == MAP_FAILED ? errno : 0;
  printf("%d %d %d\\n", r, p, mr);
  return close(fd) < 0;
}
`,
    );
    expect(sh(`${bin} ${join(a.mnt, "p6")}`).trim()).toBe(`${9} ${9} ${13}`);
    if (kernelHasIt) expect((await scrape(a))("mcfs_passthrough_opens_total") - before("mcfs_passthrough_opens_total")).toBe(1);
    expect(fs.readFileSync(join(a.mnt, "p6"), "utf8")).toBe("secret");
  });
});
