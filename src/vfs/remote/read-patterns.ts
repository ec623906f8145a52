import * as fs from "node:fs";

/** Opens of a program that reads whole files, one in this many is lazy: how a change of its habits is seen. */
const SAMPLE_EVERY = 8;
/** Outcomes kept per program; lazy while at most LAZY_READ_ON of them read on. */
const KEPT = 4;
const LAZY_READ_ON = 1;
/** Programs remembered (least recently seen forgotten first). */
const PROGRAMS = 256;

/**
 * Which programs read other nodes' files only in part (a header, a last block: cfitsio's table
 * makers), learned per program name from how the files they opened lazily were read. A lazy open
 * fetches nothing until read; a reader that reads on from where it read has the whole copy fetched
 * then, a little later than an eager open would have (so programs that read whole files stay eager,
 * sampled now and then).
 */
export interface ReadPatterns {
  /** Whether program's next open of such a file should be lazy. */
  lazy(program: string): boolean;
  /** A lazily opened file was closed: read on (its copy was fetched) or only in part. */
  closed(program: string, readOn: boolean): void;
}

export function createReadPatterns(): ReadPatterns {
  const seen = new Map<string, { opens: number; outcomes: boolean[] }>();
  const of = (program: string) => {
    let p = seen.get(program);
    if (p) seen.delete(program);
    else {
      p = { opens: 0, outcomes: [] };
      if (seen.size >= PROGRAMS) seen.delete(seen.keys().next().value!);
    }
    seen.set(program, p);
    return p;
  };
  return {
    lazy(program) {
      const p = of(program);
      p.opens++;
      const partial = p.outcomes.length === KEPT && p.outcomes.filter(Boolean).length <= LAZY_READ_ON;
      return partial || p.opens % SAMPLE_EVERY === 0;
    },
    closed(program, readOn) {
      const p = of(program);
      p.outcomes.push(readOn);
      if (p.outcomes.length > KEPT) p.outcomes.shift();
    },
  };
}

/** The name of the program pid runs (its comm), undefined if it is gone. */
export function programOf(pid: number, procRoot = "/proc"): string | undefined {
  try {
    return fs.readFileSync(`${procRoot}/${pid}/comm`, "utf8").trimEnd();
  } catch {
    return undefined;
  }
}
