import { Code, ConnectError } from "@connectrpc/connect";
import { E, FsError, errnoName, toErrno } from "../util/errno.ts";

/** The metadata key that carries the errno of a failed peer call. */
export const ERRNO_KEY = "mcfs-errno";

const codeOf: Record<number, Code> = {
  [E.ENOENT]: Code.NotFound,
  [E.EEXIST]: Code.AlreadyExists,
  [E.EACCES]: Code.PermissionDenied,
  [E.EPERM]: Code.PermissionDenied,
  [E.EINVAL]: Code.InvalidArgument,
  [E.ENOSPC]: Code.ResourceExhausted,
  [E.ETIMEDOUT]: Code.DeadlineExceeded,
};

/** Server side: any error as a ConnectError that carries its errno. */
export function toConnectError(err: unknown): ConnectError {
  if (err instanceof ConnectError) return err;
  const errno = toErrno(err);
  const e = new ConnectError(err instanceof FsError ? err.message : errnoName(errno), codeOf[errno] ?? Code.Unknown);
  e.metadata.set(ERRNO_KEY, String(errno));
  return e;
}

/** Client side: a failed peer call as an errno-carrying error (EIO when the peer could not be reached). */
export function fromConnectError(err: unknown): FsError {
  if (err instanceof FsError) return err;
  const ce = ConnectError.from(err);
  const errno = Number(ce.metadata.get(ERRNO_KEY));
  if (errno > 0) return new FsError(errno, ce.rawMessage);
  if (ce.code === Code.DeadlineExceeded) return new FsError(E.ETIMEDOUT, ce.rawMessage);
  if (ce.code === Code.Unauthenticated || ce.code === Code.PermissionDenied) return new FsError(E.EACCES, ce.rawMessage);
  return new FsError(E.EIO, ce.rawMessage);
}
