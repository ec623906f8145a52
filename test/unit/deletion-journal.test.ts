import { afterEach, beforeEach, expect, test } from "bun:test";
import * as fs from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { createDeletionJournal } from "../../src/local/deletion-journal.ts";

let base: string;
beforeEach(() => {
  base = fs.mkdtempSync(join(tmpdir(), "mcfs-unit-journal-"));
});
afterEach(() => fs.rmSync(base, { recursive: true, force: true }));

test("notes are on disk once note resolves, read back by a journal opened later, oldest first", async () => {
  const path = join(base, "deleted-files");
  const j = createDeletionJournal(path);
  const t0 = Date.now();
  // Many in one turn: one write after the first, every promise resolved once its note is written.
  await Promise.all(Array.from({ length: 100 }, (_, i) => j.note(i + 2, i * 10)));
  expect(fs.readFileSync(path, "utf8").split("\n").filter(Boolean).length).toBe(100);
  j.close();
  const again = createDeletionJournal(path);
  const got = again.since(t0);
  expect(got.map((e) => [e.ino, e.version])).toEqual(Array.from({ length: 100 }, (_, i) => [i + 2, i * 10]));
  expect(again.since(Date.now() + 1000)).toEqual([]);
  again.close();
});

test("a line cut short by a crash is skipped; the file is the daemon's own (0600)", async () => {
  const path = join(base, "deleted-files");
  const j = createDeletionJournal(path);
  await j.note(7, 3);
  fs.appendFileSync(path, "8 4");
  expect(j.since(0).map((e) => e.ino)).toEqual([7]);
  expect(fs.statSync(path).mode & 0o777).toBe(0o600);
  j.close();
  // Opened again (the daemon restarted): its notes are not joined to the cut line.
  const again = createDeletionJournal(path);
  await again.note(9, 5);
  expect(again.since(0).map((e) => e.ino)).toEqual([7, 9]);
  again.close();
});

test("a symlink in the journal's place is not followed", () => {
  const path = join(base, "deleted-files");
  fs.symlinkSync(join(base, "elsewhere"), path);
  expect(() => createDeletionJournal(path)).toThrow();
  expect(fs.existsSync(join(base, "elsewhere"))).toBe(false);
});

test("past 20,000 entries the file becomes the old one: the newest 20,000 at least are kept, 40,000 at most", async () => {
  const path = join(base, "deleted-files");
  const j = createDeletionJournal(path);
  for (let i = 0; i < 45_000; i += 1000) await Promise.all(Array.from({ length: 1000 }, (_, k) => j.note(i + k + 2, 1)));
  const kept = j.since(0).map((e) => e.ino);
  expect(kept.length).toBeGreaterThanOrEqual(20_000);
  expect(kept.length).toBeLessThanOrEqual(40_000);
  expect(kept.at(-1)).toBe(45_001);
  expect(kept).toEqual([...kept].sort((x, y) => x - y));
  j.close();
});
