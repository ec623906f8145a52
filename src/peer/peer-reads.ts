import { ConnectError } from "@connectrpc/connect";
import { E, FsError } from "../util/errno.ts";
import type { Pieces } from "../util/bytes.ts";
import { create } from "@bufbuild/protobuf";
import { ReadFilesRequestSchema, ReadRequestSchema } from "../gen/mcfs/v1/peer_pb.ts";
import { fromConnectError } from "./errors.ts";
import type { PeerPool } from "./peer-client.ts";
import { BulkSinkError, BulkUnreachable, BulkUnsupported, type BulkClient, type BulkSink } from "./bulk-client.ts";

/** A file's bytes at one version, and where the holder should look for them. */
export interface FileAt {
  ino: number;
  version: number;
  path: string;
}

/** Part of one file of a ReadFiles stream; errno set (and no data) when the holder could not send it. */
export interface FilePiece {
  index: number;
  offset: number;
  data: Pieces;
  errno: number;
  last: boolean;
}

/**
 * The peer API as the reading side uses it: plain numbers in, bytes out, and every failure an
 * errno-carrying FsError (EIO when the holder could not be reached) — no protobuf shapes beyond here.
 */
export interface PeerReads {
  /** Up to length bytes at offset. */
  range(address: string, f: FileAt, offset: number, length: number): Promise<Uint8Array>;
  /** The file in order: whole, or part of it (to its end without a length). */
  file(address: string, f: FileAt, part?: FilePart): AsyncIterable<{ offset: number; data: Pieces }>;
  /**
   * The file's part written straight into sink.fd by the file threads (BulkClient.readInto), at most
   * limit bytes: false, nothing landed, when the holder is not read over the bulk lane or no file
   * thread is free (use file).
   */
  fileInto(address: string, f: FileAt, part: FilePart, limit: number, sink: BulkSink): Promise<boolean>;
  /** Several files in one stream, each in order, one after another. */
  files(address: string, files: FileAt[]): AsyncIterable<FilePiece>;
  /** Whether address refused a connection a moment ago: calls to it fail at once meanwhile. */
  unreachable(address: string): boolean;
}

/** Which bytes of a file to stream, over which of the pool's connections to the holder, until when. */
export interface FilePart {
  offset: number;
  length?: number;
  lane?: number;
  signal?: AbortSignal;
  /** Runs the holder stores as holes are skipped, and an empty piece marks the end (ReadRequest.holes). */
  holes?: boolean;
}

const wire = (f: FileAt) => ({ path: f.path, ino: BigInt(f.ino), version: BigInt(f.version) });

/** A call not made: its holder's address refused a connection a moment ago. */
export class Unreachable extends FsError {}

/**
 * After a holder's address refused a connection, calls to it fail at once for this long: a reader
 * of many files of a node that is down paid a connection attempt for each one, several times over
 * (a batch, the file alone, its holders asked again), about 8 ms of CPU a file. Unless a node
 * started at that address since (it binds its port before it registers): then calls go to it at once.
 */
const UNREACHABLE_MS = 1000;
/** While an address is held off, how often the node registry is asked whether a node started there since. */
const BACK_CHECK_MS = 50;
/** Failures to connect at all (not of a call under way). */
const CONNECT_FAILURES = new Set(["ECONNREFUSED", "EHOSTUNREACH", "ENETUNREACH", "EHOSTDOWN"]);
/** A holder that answered no bulk request (an older node) is read over gRPC alone for this long. */
const NO_BULK_MS = 60_000;

/** An address held off: until when, why, and the start of the node registered there when it refused (see runAt). */
interface HeldOff {
  until: number;
  why: string;
  run: Promise<number | undefined>;
  checked?: { at: number; back: Promise<boolean> };
}

/**
 * bulk: files are read over the bulk lane where holders serve it (plain-text clusters), else over
 * gRPC. runAt: when the live node registered at an address started (undefined: none is).
 */
export function createPeerReads(pool: PeerPool, bulk?: BulkClient, runAt?: (address: string) => Promise<number | undefined>): PeerReads {
  const unreachable = new Map<string, HeldOff>();
  const noBulk = new Map<string, number>();
  /** The refusal that still stands for address, if any. */
  function refused(address: string): HeldOff | undefined {
    const u = unreachable.get(address);
    if (!u) return undefined;
    if (Date.now() < u.until) return u;
    unreachable.delete(address);
    return undefined;
  }
  /** Whether another node started at the address since it refused (asked at most every BACK_CHECK_MS). */
  function back(address: string, u: HeldOff): Promise<boolean> {
    if (!runAt) return Promise.resolve(false);
    if (!u.checked || Date.now() - u.checked.at >= BACK_CHECK_MS) {
      u.checked = { at: Date.now(), back: Promise.all([u.run, runAt(address)]).then(([was, now]) => now !== undefined && now !== was, () => false) };
    }
    return u.checked.back;
  }
  async function reachable(address: string): Promise<void> {
    const u = refused(address);
    if (!u) return;
    if (await back(address, u)) {
      if (unreachable.get(address) === u) unreachable.delete(address);
      return;
    }
    throw new Unreachable(E.EIO, `${u.why} (not tried again for ${UNREACHABLE_MS} ms, unless a node starts there)`);
  }
  function holdOff(address: string, why: string): void {
    unreachable.set(address, { until: Date.now() + UNREACHABLE_MS, why, run: runAt ? runAt(address).catch(() => undefined) : Promise.resolve(undefined) });
  }
  function failed(address: string, e: unknown): FsError {
    if (e instanceof BulkUnreachable && CONNECT_FAILURES.has(e.why)) holdOff(address, e.message);
    const ce = e instanceof FsError ? undefined : ConnectError.from(e);
    const code = (ce?.cause as { code?: unknown } | undefined)?.code;
    if (ce && typeof code === "string" && CONNECT_FAILURES.has(code)) holdOff(address, ce.rawMessage);
    return fromConnectError(ce ?? e);
  }
  async function* translated<T>(address: string, it: () => AsyncIterable<T>): AsyncIterable<T> {
    await reachable(address);
    try {
      yield* it();
    } catch (e) {
      throw failed(address, e);
    }
  }
  return {
    async range(address, f, offset, length) {
      await reachable(address);
      try {
        return (await pool.get(address).read({ ...wire(f), offset: BigInt(offset), length: BigInt(length) })).data;
      } catch (e) {
        throw failed(address, e);
      }
    },
    async *file(address, f, part) {
      if (bulk && !part?.holes && (noBulk.get(address) ?? 0) < Date.now()) {
        await reachable(address);
        try {
          return yield* bulk.read(address, f, part?.offset ?? 0, part?.length ?? 0, part?.signal);
        } catch (e) {
          if (!(e instanceof BulkUnsupported)) throw failed(address, e);
          // Nothing was read: the same call over gRPC.
          noBulk.set(address, Date.now() + NO_BULK_MS);
        }
      }
      const req = create(ReadRequestSchema, { ...wire(f), offset: BigInt(part?.offset ?? 0), length: BigInt(part?.length ?? 0), holes: part?.holes ?? false });
      for await (const ch of translated(address, () => pool.readFile(address, req, part?.lane, part?.signal))) yield { offset: Number(ch.offset), data: ch.data };
    },
    async fileInto(address, f, part, limit, sink) {
      if (!bulk || part.holes || (noBulk.get(address) ?? 0) >= Date.now()) return false;
      await reachable(address);
      try {
        return await bulk.readInto(address, f, part.offset, part.length ?? 0, limit, sink, part.signal);
      } catch (e) {
        if (e instanceof BulkSinkError) throw e;
        if (!(e instanceof BulkUnsupported)) throw failed(address, e);
        noBulk.set(address, Date.now() + NO_BULK_MS);
        return false;
      }
    },
    async *files(address, files) {
      for await (const msg of translated(address, () => pool.readFiles(address, create(ReadFilesRequestSchema, { files: files.map(wire) })))) {
        yield* msg;
      }
    },
    unreachable: (address) => refused(address) !== undefined,
  };
}
