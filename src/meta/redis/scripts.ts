/**
 * The Lua scripts, one .lua file each with lib.lua prepended, run by name. Each runs atomically: a
 * namespace change is one script, so it is atomic against every other node. The scripts build their
 * keys from the prefix (ARGV[1]) themselves; KEYS[1] is P next, unused by them: it declares the slot
 * every key of the filesystem hashes to, for a Redis Cluster (see redis-cluster.ts).
 */
import { OutcomeUnknown, redisDiskFull, scriptRefusal } from "../../util/errno.ts";
import type { RedisClient } from "../redis-connect.ts";
import { prepareEachConnection, unitRunner } from "../redis-failover.ts";
import { RECORD_FIELDS } from "./record-codec.ts";
import lib from "./lib.lua" with { type: "text" };
import addcached from "./addcached.lua" with { type: "text" };
import addholder from "./addholder.lua" with { type: "text" };
import create from "./create.lua" with { type: "text" };
import createmany from "./createmany.lua" with { type: "text" };
import dropcached from "./dropcached.lua" with { type: "text" };
import droplease from "./droplease.lua" with { type: "text" };
import fsckdropentry from "./fsckdropentry.lua" with { type: "text" };
import fsckdropholder from "./fsckdropholder.lua" with { type: "text" };
import fsckorphan from "./fsckorphan.lua" with { type: "text" };
import heldby from "./heldby.lua" with { type: "text" };
import holdings from "./holdings.lua" with { type: "text" };
import link from "./link.lua" with { type: "text" };
import listing from "./listing.lua" with { type: "text" };
import lookup from "./lookup.lua" with { type: "text" };
import opening from "./opening.lua" with { type: "text" };
import purge from "./purge.lua" with { type: "text" };
import raisecounter from "./raisecounter.lua" with { type: "text" };
import records from "./records.lua" with { type: "text" };
import remove from "./remove.lua" with { type: "text" };
import removexattr from "./removexattr.lua" with { type: "text" };
import rename from "./rename.lua" with { type: "text" };
import setattrs from "./setattrs.lua" with { type: "text" };
import setdata from "./setdata.lua" with { type: "text" };
import setxattr from "./setxattr.lua" with { type: "text" };
import takelease from "./takelease.lua" with { type: "text" };

const SCRIPTS = { addcached, addholder, create, createmany, dropcached, droplease, fsckdropentry, fsckdropholder, fsckorphan, heldby, holdings, link, listing, lookup, opening, purge, raisecounter, records, remove, removexattr, rename, setattrs, setdata, setxattr, takelease } as const;

export type ScriptName = keyof typeof SCRIPTS;
export type ScriptArg = string | number | bigint | Buffer;
/** Runs a script with the prefix as ARGV[1]; a refusal ("ENOENT ...") is thrown as that errno. */
export type RunScript = (name: ScriptName, args: ScriptArg[]) => Promise<unknown>;

/** Scripts that change nothing: never waited for. */
const READ_ONLY = new Set<ScriptName>(["lookup", "heldby", "records"]);
/** Scripts sent again, as they were, when the connection is lost under them: those and ones whose change repeats as made (a watcher added). */
const REPEATABLE = new Set<ScriptName>([...READ_ONLY, "opening", "holdings", "listing"]);

/** WAIT after each change: it is then on this many replicas (or the caller hears EIO). */
export interface ReplicaAck {
  replicas: number;
  timeoutMs: number;
}

/**
 * Frees room for Redis when it refuses changes because its disk is full (redisDiskFull): whether it
 * freed any.
 */
export type MakeRoom = () => boolean;

/** Longest a refused change waits for Redis to append again once room was made. */
const ROOM_WAIT_MS = 3000;

export interface ScriptRunnerOptions {
  ack?: ReplicaAck | undefined;
  makeRoom?: MakeRoom | undefined;
}

/**
 * Loads every script (EVALSHA from then on), and again on every new connection before anything else
 * is sent on it: a new master after a failover, or a restarted Redis, has none. Loaded on demand
 * instead (NOSCRIPT), a script would be sent again after the scripts pipelined behind it had already
 * run on the new server: a close's update after its create ran first, failed (ENOENT, as if the
 * file had been unlinked), and the close's bytes were never published. A server that loses them
 * under a live connection (SCRIPT FLUSH) gets the one script refused (NOSCRIPT) again with its text:
 * one retry that cannot fail the same way. What was pipelined behind it may have run first: a
 * cluster node's close sends its update again once its create is in (file-ops' publish); a sole
 * node's deferred update that failed so is repaired from its local file at the next start.
 *
 * A script refused for a full disk made no change: Redis refuses every write while its last append
 * failed, so the script's first write was refused, and that cannot change while a script runs. With
 * makeRoom, it is sent again once room is made and Redis appends again; scripts sent meanwhile wait
 * for that, so none runs before what was refused ahead of it.
 */
export async function createScriptRunner(client: RedisClient, prefix: string, o: ScriptRunnerOptions = {}): Promise<RunScript> {
  const { ack, makeRoom } = o;
  const unit = unitRunner(client);
  const routing = `${prefix}next`;
  const names = Object.keys(SCRIPTS) as ScriptName[];
  const text = (name: ScriptName) => `local RECORD = {${RECORD_FIELDS.map((f) => `'${f}'`).join(", ")}}\n${lib}\n${SCRIPTS[name]}`;
  const shas = new Map<ScriptName, string>();
  async function load(name: ScriptName): Promise<string> {
    const sha = await client.scriptLoad(text(name));
    shas.set(name, sha);
    return sha;
  }
  for (const n of names) await load(n);
  prepareEachConnection(client, (raw) => Promise.all(names.map((n) => raw.scriptLoad(text(n)))));

  const waits = (name: ScriptName) => ack !== undefined && ack.replicas > 0 && !READ_ONLY.has(name);
  /**
   * The script (by its SHA, or with its text when Redis has lost it), and WAIT right behind it on the
   * same connection (one round trip; sent again together).
   */
  const run = (name: ScriptName, argv: string[], whole: boolean) =>
    unit(async (c) => {
      const reply = whole ? c.eval(text(name), { keys: [routing], arguments: argv }) : c.evalSha(shas.get(name)!, { keys: [routing], arguments: argv });
      if (!waits(name)) return reply;
      const acked = c.wait(ack!.replicas, ack!.timeoutMs);
      acked.catch(() => {});
      const r = await reply;
      const n = await acked;
      // Made, and perhaps lost with the master: as a change lost on its way.
      if (n < ack!.replicas) throw new OutcomeUnknown(`${name}: made on the Redis master but acknowledged by ${n} of ${ack!.replicas} replicas within ${ack!.timeoutMs} ms`);
      return r;
    }, REPEATABLE.has(name));

  const send = async (name: ScriptName, argv: string[]) => {
    try {
      return await run(name, argv, false);
    } catch (e) {
      if (!(e as Error).message?.startsWith("NOSCRIPT")) throw e;
      // Sent whole, it cannot be lost again on the way (as a SCRIPT LOAD then EVALSHA could).
      return await run(name, argv, true);
    }
  };

  /** Redis retries its failed append as it serves: until one succeeds, or ROOM_WAIT_MS. */
  async function appendsAgain(): Promise<boolean> {
    const end = Date.now() + ROOM_WAIT_MS;
    for (;;) {
      const info = await client.info("persistence").catch(() => "");
      if (info.includes("aof_last_write_status:ok")) return true;
      if (Date.now() >= end) return false;
      await Bun.sleep(20);
    }
  }
  let recovering: Promise<boolean> | undefined;
  const recover = (mk: MakeRoom) => (recovering ??= (async () => mk() && (await appendsAgain()))().finally(() => (recovering = undefined)));

  return async (name, args) => {
    const argv = [prefix, ...args.map((a) => (Buffer.isBuffer(a) ? a : String(a)))] as string[];
    try {
      if (recovering) await recovering;
      try {
        return await send(name, argv);
      } catch (e) {
        if (!makeRoom || !redisDiskFull((e as Error).message ?? "") || !(await recover(makeRoom))) throw e;
        return await send(name, argv);
      }
    } catch (e) {
      throw scriptRefusal((e as Error).message ?? "") ?? e;
    }
  };
}
