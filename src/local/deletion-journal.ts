import * as fs from "node:fs";

/** Entries a journal file takes before it becomes the old one (and the old one before it goes). */
const FILE_MAX = 20_000;

/** A file whose bytes this node removed because its last name went: its inode, the version held, when (ms). */
export interface DeletedFile {
  ino: number;
  version: number;
  at: number;
}

/**
 * The files whose bytes this node removed because the namespace deleted them, kept on its disk.
 * Redis may lose a deletion after the holder has acted on it (the last second of an `appendfsync
 * everysec` AOF, a failover to a replica that had not got it): the name then comes back with no bytes
 * anywhere. Read when Redis may have lost writes, this tells such a deletion from a disk that lost a
 * file. Noted as the bytes go (appended off this thread, the write issued at once; notes made during
 * a write go as the next one); the newest 20,000 to 40,000 entries are kept, in two files.
 */
export interface DeletionJournal {
  /** Resolves once the entry is written. */
  note(ino: number, version: number): Promise<void>;
  /** Entries noted at or after since (ms since the epoch), oldest first. */
  since(since: number): DeletedFile[];
  close(): void;
}

/** path: the journal's file (path.old is the one before it). */
export function createDeletionJournal(path: string): DeletionJournal {
  const old = `${path}.old`;
  const open = () => fs.openSync(path, fs.constants.O_WRONLY | fs.constants.O_APPEND | fs.constants.O_CREAT | fs.constants.O_NOFOLLOW, 0o600);
  const text = (p: string) => {
    try {
      return fs.readFileSync(p, "utf8");
    } catch {
      return "";
    }
  };
  const parse = (t: string): DeletedFile[] =>
    t.split("\n").flatMap((line) => {
      const f = line.split(" ").map(Number);
      const [ino, version, at] = f;
      return f.length === 3 && f.every(Number.isSafeInteger) && ino! > 0 ? [{ ino: ino!, version: version!, at: at! }] : [];
    });
  let fd = open();
  const had = text(path);
  let lines = parse(had).length;
  // A line a crash cut short ends here: the next note starts a line of its own.
  if (had && !had.endsWith("\n")) fs.writeSync(fd, "\n");
  /** Notes made while a write was under way: written next, as one write. */
  let waiting: { lines: string[]; done: PromiseWithResolvers<void> } | undefined;
  let busy = false;

  const write = async (batch: string[]) => {
    if (lines + batch.length > FILE_MAX) {
      fs.closeSync(fd);
      fs.renameSync(path, old);
      fd = open();
      lines = 0;
    }
    lines += batch.length;
    const buf = Buffer.from(batch.join(""));
    await new Promise<void>((res, rej) => fs.write(fd, buf, (err) => (err ? rej(err) : res())));
  };
  const start = (batch: string[], done: PromiseWithResolvers<void>) => {
    busy = true;
    write(batch).then(done.resolve, done.reject).finally(() => {
      const w = waiting;
      waiting = undefined;
      if (w) start(w.lines, w.done);
      else busy = false;
    });
  };

  return {
    note(ino, version) {
      const line = `${ino} ${version} ${Date.now()}\n`;
      if (!busy) {
        const done = Promise.withResolvers<void>();
        start([line], done);
        return done.promise;
      }
      waiting ??= { lines: [], done: Promise.withResolvers<void>() };
      waiting.lines.push(line);
      return waiting.done.promise;
    },
    since(since) {
      return [...parse(text(old)), ...parse(text(path))].filter((e) => e.at >= since);
    },
    close() {
      fs.closeSync(fd);
    },
  };
}
