import { constants as osc } from "node:os";

/** Errno values by name, from the platform (Linux). */
export const E = osc.errno as Record<string, number> & {
  ENOENT: number; EEXIST: number; ENOTDIR: number; EISDIR: number; ENOTEMPTY: number; EINVAL: number;
  EIO: number; EACCES: number; EPERM: number; ENAMETOOLONG: number; EXDEV: number; ENOSPC: number;
  ETIMEDOUT: number; EINTR: number; EBADF: number; ERANGE: number; ENOSYS: number; ENOTSUP: number;
  EOPNOTSUPP: number; EMLINK: number; ELOOP: number; EFBIG: number; EROFS: number; ENODATA: number;
  EAGAIN: number; EMFILE: number; ENOTCONN: number; EILSEQ: number; EHOSTUNREACH: number; ECONNREFUSED: number; E2BIG: number; ESTALE: number;
  EPROTO: number; ECONNRESET: number;
};

/** An error that carries the errno to report to the caller of a filesystem operation. */
export class FsError extends Error {
  constructor(readonly errno: number, message?: string) {
    super(message ?? errnoName(errno));
    this.name = "FsError";
  }

  /** The errno's name, as Node's system errors carry it ("ENOENT"). */
  get code(): string {
    return errnoName(this.errno);
  }
}

/**
 * A change that may or may not have been made (its connection was lost with it on the way): EIO to
 * the caller, who must not undo what it did on the change's behalf.
 */
export class OutcomeUnknown extends FsError {
  constructor(message: string) {
    super(E.EIO as number, message);
    this.name = "OutcomeUnknown";
  }
}

/**
 * A change the store could not take (out of reach, or not serving changes yet): not made. EIO to the
 * caller, who, as after OutcomeUnknown, keeps what it did on the change's behalf: nothing refused it.
 */
export class StoreUnavailable extends FsError {
  constructor(message: string) {
    super(E.EIO as number, message);
    this.name = "StoreUnavailable";
  }
}

/**
 * e, or ESTALE in its place when e is the store's ENOENT for ino: the file went on another node since
 * the kernel looked its name up, and ESTALE makes the kernel walk the path again (NFS's answer).
 */
export function staleIfGone(e: unknown, ino: number): unknown {
  return e instanceof FsError && e.errno === E.ENOENT ? new FsError(E.ESTALE, `inode ${ino} is gone`) : e;
}

/** The errno an error carries, if any (FsError or a Node system error); no logging, unlike toErrno. */
export function errnoOf(err: unknown): number | undefined {
  if (err instanceof FsError) return err.errno;
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === "string" && code in E ? (E[code] as number) : undefined;
}

export function fsError(name: keyof typeof E, message?: string): FsError {
  return new FsError(E[name] as number, message ?? name);
}

export function errnoName(errno: number): string {
  for (const [k, v] of Object.entries(E)) if (v === errno) return k;
  return `errno ${errno}`;
}

type Logger = (err: unknown) => void;
let logUnexpected: Logger = () => {};

/** Where unmapped errors are reported (once each, by toErrno). */
export function setUnexpectedErrorLogger(fn: Logger): void {
  logUnexpected = fn;
}

/** A connection's errors (Redis, a peer): what broke is the network, not the file; the caller gets EIO. */
const CONNECTION_CODES = new Set(["ECONNRESET", "ECONNREFUSED", "ECONNABORTED", "EPIPE", "ENOTCONN", "EHOSTUNREACH", "ENETUNREACH", "ENETDOWN", "EHOSTDOWN"]);

/** A refusal of one of our Lua scripts: an errno name ("ENOENT", "ENOTEMPTY detail"), which Redis may prefix with "ERR". */
export function scriptRefusal(message: string): FsError | undefined {
  const m = /^(?:ERR )?(E[A-Z0-9]+)\b ?(.*)$/.exec(message);
  if (!m || !(m[1]! in E)) return undefined;
  return new FsError(E[m[1]!] as number, m[2] || m[1]!);
}

/** Redis refusing changes because it could not append them to its file: the disk under it is full. */
export function redisDiskFull(message: string): boolean {
  return /^MISCONF\b/.test(message) && /No space left on device|Disk quota exceeded/.test(message);
}

/** Why a server could not listen, in words naming what to change. */
export function listenFailure(e: unknown): string {
  const n = errnoOf(e);
  if (n === E.EADDRINUSE) return "port in use";
  if (n === E.EADDRNOTAVAIL) return "no such local address (give --listen an address of this machine)";
  if (n === E.EACCES) return "not allowed to listen there (a port below 1024 needs root)";
  return (e as Error).message;
}

/**
 * The one mapping from anything thrown inside the filesystem to an errno.
 * Node system errors keep their code (a connection's are EIO); Redis errors carrying an errno name (our Lua scripts) keep it;
 * Redis OOM, and Redis unable to append to its file on a full disk, mean no space; timeouts and aborts have their own; the rest is EIO, logged.
 */
export function toErrno(err: unknown): number {
  if (err instanceof FsError) return err.errno;
  if (err && typeof err === "object") {
    const e = err as { code?: unknown; message?: unknown; name?: unknown; errno?: unknown };
    // Not logged as unexpected: the store and the peer pool log their connections going down.
    if (typeof e.code === "string" && CONNECTION_CODES.has(e.code)) return E.EIO;
    if (typeof e.code === "string" && e.code in E) return E[e.code] as number;
    const msg = typeof e.message === "string" ? e.message : "";
    const refused = scriptRefusal(msg);
    if (refused) return refused.errno;
    if (msg.startsWith("OOM") || redisDiskFull(msg)) return E.ENOSPC;
    if (e.name === "TimeoutError" || e.code === "ETIMEDOUT") return E.ETIMEDOUT;
    if (e.name === "AbortError") return E.EINTR;
  }
  logUnexpected(err);
  return E.EIO;
}
