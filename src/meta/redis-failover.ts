/**
 * A Redis client that follows one master through failovers: the sentinels' master, or the owner of
 * the filesystem's hash slot in a Redis Cluster. One node-redis client whose socket connects wherever
 * the locator last found the master; commands go through a gate that is open only while the
 * connection is ready, ROLE says master and the locator still names it. A command issued while the
 * gate is shut, or refused (READONLY from a demoted master, MOVED from a node that lost the slot),
 * waits for the next master and is sent again, up to a bound; then it fails with EIO naming the
 * outage. A read lost with the connection is sent again too; a change lost with it is not: it may
 * have been made (and passed to the replicas) before the master died, and the scripts are not all
 * safe to repeat (a create written behind would replace its own entry). It fails with EIO.
 */
import { ClientOfflineError, ConnectionTimeoutError, createClient, SocketClosedUnexpectedlyError } from "redis";
import { fsError, OutcomeUnknown, StoreUnavailable } from "../util/errno.ts";
import type { RedisClient } from "./redis-connect.ts";
import { socketTls, type Address, type MultiHostUrl } from "./redis-multi-url.ts";

/**
 * Runs fn against the client's own connection as one unit: sent again as a whole after a failover.
 * repeatable: fn changes nothing (or is safe to run twice), so it is sent again even when lost in flight.
 */
export type UnitRunner = <T>(fn: (raw: RedisClient) => Promise<T>, repeatable?: boolean) => Promise<T>;

const units = new WeakMap<object, UnitRunner>();

/**
 * How to run several commands as one unit on this client. A plain client runs them once; a change
 * lost with its connection may or may not have been made, as through a failover: OutcomeUnknown; one
 * Redis could not take (no connection, not serving changes) was not: StoreUnavailable. Either way a
 * create written behind keeps its local file rather than take it for refused and delete it.
 */
export function unitRunner(client: RedisClient): UnitRunner {
  return (
    units.get(client) ??
    ((fn, repeatable = false) =>
      repeatable
        ? fn(client)
        : fn(client).catch((e: unknown) => {
            const why = failover(e);
            if (why === "lost") throw new OutcomeUnknown(`the connection to Redis was lost with a change on its way: it may or may not have been made (${(e as Error).message})`);
            if (why === "refused") throw new StoreUnavailable(`Redis could not take a change (${(e as Error).message})`);
            throw e;
          }))
  );
}

/** What a new connection needs before the client's own commands go out on it (commands of raw). */
export type Preparation = (raw: RedisClient) => Promise<unknown>;

const preparations = new WeakMap<object, (p: Preparation) => void>();

/**
 * Run prepare on every later connection of client (after a failover, a reconnection, a restart of
 * Redis), before any other command of the client goes out on it; the one open now is the caller's
 * to prepare.
 */
export function prepareEachConnection(client: RedisClient, prepare: Preparation): void {
  const following = preparations.get(client);
  if (following) return following(prepare);
  // A plain client refuses commands until it is ready (no offline queue): those sent in its "ready"
  // handler are the first on the new connection.
  client.on("ready", () => void prepare(client).catch(() => {}));
}

/** Commands that are not Redis commands, or that must not wait (closing, listening, iterating). */
const PASSTHROUGH = new Set<PropertyKey>(["on", "once", "off", "addListener", "removeListener", "removeAllListeners", "emit", "listeners", "duplicate", "connect", "disconnect", "quit", "QUIT", "ref", "unref", "scanIterator", "hScanIterator", "sScanIterator", "zScanIterator", "multi", "MULTI"]);

/** Commands of the client that change nothing: sent again even when lost in flight. */
const READS = new Set<PropertyKey>(["get", "exists", "hGet", "hGetAll", "hmGet", "hKeys", "hExists", "hLen", "sMembers", "sIsMember", "lRange", "zRange", "zRangeByScore", "info", "ping", "scriptLoad", "clientId", "time"]);

/**
 * Why a command failed, when a next master may take it: never sent or refused unrun ("refused"), or
 * lost with the connection, run or not ("lost").
 */
function failover(e: unknown): "refused" | "lost" | undefined {
  // By class, not name: the build minifies class names.
  if (e instanceof ClientOfflineError) return "refused";
  if (e instanceof SocketClosedUnexpectedlyError || e instanceof ConnectionTimeoutError) return "lost";
  const err = e as { message?: string; code?: string };
  if (err?.code === "ECONNREFUSED") return "refused";
  if (["ECONNRESET", "EPIPE", "ETIMEDOUT"].includes(err?.code ?? "")) return "lost";
  if (/^(READONLY|MOVED|ASK|CLUSTERDOWN|LOADING|MASTERDOWN|TRYAGAIN)\b/.test(err?.message ?? "")) return "refused";
  // A blocked WAIT on a master being demoted: its change was made, and may be lost.
  if (/^UNBLOCKED\b/.test(err?.message ?? "")) return "lost";
  return undefined;
}

/** Where the one master that matters is now (the sentinels' master, the slot's owner in a cluster). */
export interface MasterLocator {
  /** Where the master was last found. */
  master: Address;
  /** Look now; calls while one looks share its answer. */
  locate(): Promise<Address>;
  /** Tell of a switch of master beyond what a lost connection tells. */
  watch(on: SwitchEvents): Promise<void>;
  close(): Promise<void>;
}

export interface SwitchEvents {
  /** A failover has begun: the master may be replaced at any moment. */
  moving(): void;
  /**
   * The master may be elsewhere now: promoted or switched (a failover's last steps), aborted (given
   * up: the master stays), or heard again after the watcher's own reconnection.
   */
  moved(how: "switched" | "aborted" | "heard again"): void;
}

/** Hears the connection go ("error", each new cause once) and come back ("ready"), for logs. */
export type ConnectionEvents = (event: "error" | "ready", detail?: string) => void;

/**
 * A client of the master the locator finds (u: the URL's user, db and failover_wait_ms; where: the
 * servers and name, for errors; password: given apart from the URL).
 */
export async function connectFollowing(locator: MasterLocator, u: MultiHostUrl, where: string, password: string | undefined, onEvent?: ConnectionEvents): Promise<RedisClient> {
  const kick = () => void locator.locate().catch((e: Error) => note(e.message));
  const raw = createClient({
    socket: {
      // Read at every (re)connection: the socket follows the locator's answer.
      get host() {
        return locator.master.host;
      },
      get port() {
        return locator.master.port;
      },
      connectTimeout: 2000,
      ...socketTls(u),
      reconnectStrategy: (n: number) => {
        if (closed) return false;
        kick();
        return Math.min(50 * 2 ** n, 500);
      },
    },
    ...(u.username ? { username: u.username } : {}),
    ...((password ?? u.password) !== undefined ? { password: password ?? u.password } : {}),
    ...(u.db ? { database: u.db } : {}),
    disableOfflineQueue: true,
  });

  let open = false;
  let closed = false;
  let prepare: Preparation | undefined;
  /** The master a failover has begun to replace (none: no failover under way). */
  let failing: Address | undefined;
  const same = (a: Address, b: Address | undefined) => b !== undefined && a.host === b.host && a.port === b.port;
  /** The last thing that went wrong (for the outage's message), and the last one logged (each once). */
  let cause = "";
  let told = "";
  let waiters: (() => void)[] = [];
  function tell(detail: string) {
    if (detail !== told) onEvent?.("error", detail);
    told = detail;
  }
  function note(detail: string) {
    cause = detail;
    tell(detail);
  }
  function setOpen() {
    open = true;
    failing = undefined;
    if (told) onEvent?.("ready", `master at ${locator.master.host}:${locator.master.port}`);
    told = cause = "";
    for (const w of waiters.splice(0)) w();
  }
  /** This connection's CLIENT ID, on the server it was made to. */
  let myId: number | undefined;
  /**
   * Drop connection id (the current one unless it was replaced meanwhile) so that the socket
   * reconnects to where the locator now points. Killed from a connection of its own: on ours, a
   * blocked WAIT would hold the kill back until it times out.
   */
  async function reconnect(id = myId) {
    open = false;
    await locator.locate().catch((e: Error) => note(e.message));
    if (id === undefined || id !== myId) return;
    const killer = raw.duplicate({ socket: { host: connectedTo.host, port: connectedTo.port, connectTimeout: 1000, reconnectStrategy: false } });
    killer.on("error", () => {});
    try {
      await killer.connect();
      await killer.sendCommand(["CLIENT", "KILL", "ID", String(id)]);
    } catch (e) {
      note(`dropping the connection to ${connectedTo.host}:${connectedTo.port}: ${(e as Error).message}`);
    } finally {
      await killer.disconnect().catch(() => {});
    }
  }
  async function verify() {
    try {
      const [role, id] = (await Promise.all([raw.sendCommand(["ROLE"]), raw.sendCommand(["CLIENT", "ID"])])) as [[string, ...unknown[]], number];
      myId = id;
      // While the gate is shut: nothing of the client's own can come before it on this connection.
      if (role[0] === "master") await prepare?.(raw);
      // A master the locator no longer names is the old one before its demotion: what it takes is lost.
      const named = await locator.locate().catch(() => locator.master);
      const here = `${connectedTo.host}:${connectedTo.port}`;
      // Nor the master being replaced, though the sentinels name it until the promotion is done.
      if (same(connectedTo, failing)) return note(`a failover of ${here} is under way`);
      if (role[0] === "master" && same(named, connectedTo)) return setOpen();
      note(role[0] === "master" ? `${here} is no longer the master the sentinels name` : `${here} is a ${role[0]}, not the master`);
      await reconnect();
    } catch (e) {
      note((e as Error).message);
    }
  }
  raw.on("error", (e: Error) => {
    open = false;
    note(e.message);
  });
  raw.on("ready", () => void verify());
  let connectedTo = { ...locator.master };
  raw.on("connect", () => {
    connectedTo = { ...locator.master };
    // An id of the last connection names some other client on this server.
    myId = undefined;
  });

  function opened(deadline: number): Promise<void> {
    return new Promise((resolve, reject) => {
      const w = () => {
        clearTimeout(t);
        resolve();
      };
      const t = setTimeout(() => {
        waiters = waiters.filter((x) => x !== w);
        reject(outage());
        // Should the end of a failover have gone unheard: look again.
        failing = undefined;
        if (!open && raw.isReady) void verify();
      }, Math.max(0, deadline - Date.now()));
      waiters.push(w);
    });
  }
  function outage() {
    const e = new StoreUnavailable(`no Redis master for ${u.failoverWaitMs} ms (${where}): ${cause || "not answering"}`);
    tell(e.message);
    return e;
  }

  const run: UnitRunner = async (fn, repeatable = false) => {
    const deadline = Date.now() + u.failoverWaitMs;
    for (;;) {
      if (closed) throw fsError("EIO", "Redis client closed");
      // When open, fn runs in this same tick: commands issued together stay in order on one connection.
      if (!open) await opened(deadline);
      const on = myId;
      try {
        return await fn(raw);
      } catch (e) {
        const why = failover(e);
        if (closed || !why) throw e;
        note((e as Error).message);
        if (why === "lost" && !repeatable) throw new OutcomeUnknown(`the connection to the Redis master was lost with a change on its way (${where}): it may or may not have been made (${(e as Error).message})`);
        // A demoted master, or a cluster node that no longer serves the slot.
        if (/^(READONLY|MOVED)\b/.test((e as Error).message)) await reconnect(on);
        // LOADING, a slot being migrated (ASK) and the like: the same server, soon.
        else if (open && raw.isReady) await new Promise((r) => setTimeout(r, 100));
        if (Date.now() >= deadline) throw outage();
      }
    }
  };

  const proxy = new Proxy(raw, {
    get(target, p) {
      const v = Reflect.get(target, p, target) as unknown;
      if (typeof v !== "function") return v;
      const f = v as (...a: unknown[]) => unknown;
      if (p === "disconnect" || p === "quit") {
        return async (...a: unknown[]) => {
          closed = true;
          for (const w of waiters.splice(0)) w();
          await locator.close();
          return f.apply(target, a);
        };
      }
      if (p === "multi" || p === "MULTI") return (...a: unknown[]) => guardMulti(f.apply(target, a) as object);
      if (PASSTHROUGH.has(p)) return f.bind(target);
      return (...a: unknown[]) => run(() => f.apply(target, a) as Promise<unknown>, READS.has(p));
    },
  }) as RedisClient;

  /** A transaction is sent again as a whole. */
  function guardMulti(m: object): object {
    const wrapped: object = new Proxy(m, {
      get(target, p) {
        const v = Reflect.get(target, p, target) as unknown;
        if (typeof v !== "function") return v;
        const f = v as (...a: unknown[]) => unknown;
        if (p === "exec" || p === "EXEC") return (...a: unknown[]) => run(() => f.apply(target, a) as Promise<unknown>);
        return (...a: unknown[]) => {
          const r = f.apply(target, a);
          return r === target ? wrapped : r;
        };
      },
    });
    return wrapped;
  }

  units.set(proxy, run);
  preparations.set(proxy, (p) => (prepare = p));
  try {
    await Promise.race([raw.connect().then(() => opened(Date.now() + 10_000)), new Promise<never>((_, rej) => setTimeout(() => rej(new Error("timed out after 10 s")), 10_000).unref())]);
  } catch (e) {
    closed = true;
    await raw.disconnect().catch(() => {});
    await locator.close();
    throw new Error(`cannot connect to ${where}: ${cause || (e as Error).message}`);
  }
  // Hearing a switch at once matters when the old master stays up but unreachable; losing the
  // connection already tells most switches.
  await locator
    .watch({
      // Writes wait from the start of a failover: what the old master takes then is lost.
      moving: () => {
        open = false;
        failing ??= { ...connectedTo };
      },
      moved: (how) => {
        if (how === "aborted") failing = undefined;
        void locator.locate().then((a) => {
          if (!same(a, connectedTo)) void reconnect();
          // The sentinel asked may not know the new master yet: the others announce it as they learn it.
          else if (!open && raw.isReady) void verify();
        }, () => {});
      },
    })
    .catch((e: Error) => note(`watching for a switch of master: ${e.message}`));
  return proxy;
}
