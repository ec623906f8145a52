import { Unreachable } from "../../peer/peer-reads.ts";
import { everyFewSeconds } from "../../peer/refusal-log.ts";
import type { Logger } from "../../util/log.ts";

export type HolderWarnings = (fields: Record<string, unknown>, e: unknown, msg: string) => void;

/**
 * A holder's failures, logged each, except calls not made to a holder that refused a connection a
 * moment ago: reads of a dead node's files would log one each (and several), so those come every few
 * seconds, with how many were held back. One for all of a node's readers, so that the limit holds.
 */
export function holderWarnings(log: Logger): HolderWarnings {
  const refused = everyFewSeconds((heldBack: number, fields: Record<string, unknown>, err: string) => log.warn({ ...fields, err, heldBack }, "holder refused a connection a moment ago: reads of its files fail at once"));
  return (fields, e, msg) => (e instanceof Unreachable ? refused(fields, e.message) : log.warn({ ...fields, err: (e as Error).message }, msg));
}
