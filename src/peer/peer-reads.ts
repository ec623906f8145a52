import type { FsError } from "../util/errno.ts";
import type { Pieces } from "../util/bytes.ts";
import { create } from "@bufbuild/protobuf";
import { ReadFilesRequestSchema, ReadRequestSchema } from "../gen/mcfs/v1/peer_pb.ts";
import { fromConnectError } from "./errors.ts";
import type { PeerPool } from "./peer-client.ts";

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
  /** Several files in one stream, each in order, one after another. */
  files(address: string, files: FileAt[]): AsyncIterable<FilePiece>;
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

async function* translated<T>(it: AsyncIterable<T>): AsyncIterable<T> {
  try {
    yield* it;
  } catch (e) {
    throw fromConnectError(e) satisfies FsError;
  }
}

export function createPeerReads(pool: PeerPool): PeerReads {
  return {
    async range(address, f, offset, length) {
      try {
        return (await pool.get(address).read({ ...wire(f), offset: BigInt(offset), length: BigInt(length) })).data;
      } catch (e) {
        throw fromConnectError(e);
      }
    },
    async *file(address, f, part) {
      const req = create(ReadRequestSchema, { ...wire(f), offset: BigInt(part?.offset ?? 0), length: BigInt(part?.length ?? 0), holes: part?.holes ?? false });
      for await (const ch of translated(pool.readFile(address, req, part?.lane, part?.signal))) yield { offset: Number(ch.offset), data: ch.data };
    },
    async *files(address, files) {
      for await (const msg of translated(pool.readFiles(address, create(ReadFilesRequestSchema, { files: files.map(wire) })))) {
        yield* msg;
      }
    },
  };
}
