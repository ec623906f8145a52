import { Unreachable } from "../../peer/peer-reads.ts";
import { everyFewSeconds } from "../../peer/refusal-log.ts";
import type { Logger } from "../../util/log.ts";

/**
 * A holder's failures, logged each, except calls not made to a holder that refused a connection a
 * moment ago: reads of a dead node's files would log one each (and several), so those come every few
 * seconds, with how many were held back.
 */
export function holderWarnings(log: Logger): (fields: Record<string, unknown>, e: unknown, msg: string) => void {
  const refused = everyFewSeconds((heldBack: number, fields: Record<string, unknown>, err: string) => log.warn({ ...fields, err, heldBack }, "holder refused a connection a moment ago: reads of its files fail at once"));
  return (fields, e, msg) => (e instanceof Unreachable ? refused(fields, e.message) : log.warn({ ...fields, err: (e as Error).message }, msg));
}
