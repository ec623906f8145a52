/**
 * Finding the Redis master through Redis Sentinel: the redis+sentinel:// URL, and the sentinels asked
 * where the master of a name is (SENTINEL get-master-addr-by-name), again whenever the caller lost it
 * and at once when a sentinel announces +switch-master.
 */
import { createClient } from "redis";

export interface Address {
  host: string;
  port: number;
}

/**
 * redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/master-name[?query]
 * query: db (number), wait_replicas and wait_ms (WAIT after each namespace change),
 * failover_wait_ms (how long an operation waits for a master before failing with EIO).
 */
export interface SentinelUrl {
  sentinels: Address[];
  master: string;
  username?: string;
  /** Of the master and its replicas; the sentinels are asked without one. */
  password?: string;
  db: number;
  /** Replicas that must acknowledge each namespace change (0: none waited for). */
  waitReplicas: number;
  waitMs: number;
  failoverWaitMs: number;
}

export const SENTINEL_SCHEME = "redis+sentinel://";
const DEFAULT_SENTINEL_PORT = 26379;
const QUERY = new Set(["db", "wait_replicas", "wait_ms", "failover_wait_ms"]);

/** The parts of a redis+sentinel:// URL; a wrong part is named (never with the password). */
export function parseSentinelUrl(url: string): SentinelUrl {
  if (!url.startsWith(SENTINEL_SCHEME)) throw new Error(`not a ${SENTINEL_SCHEME} URL`);
  const rest = url.slice(SENTINEL_SCHEME.length);
  const slash = rest.indexOf("/");
  if (slash < 0) throw new Error("names no master: add /<master-name> after the sentinels");
  const authority = rest.slice(0, slash);
  const [path, query = ""] = rest.slice(slash + 1).split("?", 2) as [string, string?];
  const at = authority.lastIndexOf("@");
  const hosts = at < 0 ? authority : authority.slice(at + 1);
  const out: SentinelUrl = { sentinels: [], master: decodeURIComponent(path), db: 0, waitReplicas: 0, waitMs: 10_000, failoverWaitMs: 30_000 };
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    const colon = userinfo.indexOf(":");
    const user = decodeURIComponent(colon < 0 ? userinfo : userinfo.slice(0, colon));
    if (user) out.username = user;
    if (colon >= 0) out.password = decodeURIComponent(userinfo.slice(colon + 1));
  }
  if (!out.master || out.master.includes("/")) throw new Error(`master name "${path}" is not one name`);
  for (const h of hosts.split(",")) {
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d+))?$/.exec(h);
    const port = m?.[2] === undefined ? DEFAULT_SENTINEL_PORT : Number(m[2]);
    if (!m || !(port >= 1 && port <= 65535)) throw new Error(`sentinel "${h}" is not host[:port]`);
    out.sentinels.push({ host: m[1]!.replace(/^\[|\]$/g, ""), port });
  }
  for (const [k, v] of new URLSearchParams(query)) {
    if (!QUERY.has(k)) throw new Error(`unknown parameter "${k}" (known: ${[...QUERY].join(", ")})`);
    if (!/^\d+$/.test(v)) throw new Error(`${k}=${v} is not a whole number`);
    const n = Number(v);
    if (k === "db") out.db = n;
    else if (k === "wait_replicas") out.waitReplicas = n;
    else if (k === "wait_ms") out.waitMs = n;
    else out.failoverWaitMs = n;
  }
  return out;
}

export interface MasterLocator {
  /** Where the sentinels last said the master is. */
  readonly master: Address;
  /** Ask the sentinels now; calls while one asks share its answer. */
  locate(): Promise<Address>;
  /** Hear +promoted-slave and +switch-master from a sentinel (any that answers; the next one when it goes). */
  watch(onSwitch: () => void): Promise<void>;
  close(): Promise<void>;
}

const show = (a: Address) => (a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

export function describeSentinels(u: SentinelUrl): string {
  return `master "${u.master}" of sentinels ${u.sentinels.map(show).join(",")}`;
}

export async function createMasterLocator(u: SentinelUrl): Promise<MasterLocator> {
  // The sentinel that answered last is asked first next time.
  const order = [...u.sentinels];
  let asking: Promise<Address> | undefined;
  let watcher: ReturnType<typeof createClient> | undefined;

  async function ask(s: Address): Promise<Address> {
    const c = createClient({ socket: { host: s.host, port: s.port, connectTimeout: 1000, reconnectStrategy: false }, disableClientInfo: true });
    c.on("error", () => {});
    try {
      await c.connect();
      const r = (await c.sendCommand(["SENTINEL", "get-master-addr-by-name", u.master])) as [string, string] | null;
      if (!r) throw new Error(`does not know master "${u.master}"`);
      return { host: r[0], port: Number(r[1]) };
    } finally {
      await c.disconnect().catch(() => {});
    }
  }

  async function askAll(): Promise<Address> {
    const why: string[] = [];
    for (const s of [...order]) {
      try {
        const a = await ask(s);
        order.splice(order.indexOf(s), 1);
        order.unshift(s);
        locator.master = a;
        return a;
      } catch (e) {
        why.push(`${show(s)}: ${(e as Error).message}`);
      }
    }
    throw new Error(`no sentinel told where ${describeSentinels(u)} is (${why.join("; ")})`);
  }

  const locator = {
    master: { host: "", port: 0 } as Address,
    locate() {
      asking ??= askAll().finally(() => (asking = undefined));
      return asking;
    },
    async watch(onSwitch: () => void) {
      let next = 0;
      const at = () => order[next % order.length]!;
      const c = createClient({
        socket: {
          get host() {
            return at().host;
          },
          get port() {
            return at().port;
          },
          connectTimeout: 1000,
          reconnectStrategy: () => {
            next++;
            return 200;
          },
        },
        disableClientInfo: true,
      });
      watcher = c;
      c.on("error", () => {});
      // A new sentinel connection may have missed a switch announced meanwhile.
      let first = true;
      c.on("ready", () => {
        if (!first) onSwitch();
        first = false;
      });
      await c.connect();
      await c.subscribe("+switch-master", (msg) => {
        if (msg.startsWith(`${u.master} `)) onSwitch();
      });
      // Announced at the promotion, before +switch-master: the old master may take writes until it
      // is reconfigured, and what it takes then is lost.
      await c.subscribe("+promoted-slave", (msg) => {
        if (msg.includes(` @ ${u.master} `)) onSwitch();
      });
    },
    async close() {
      if (watcher?.isOpen) await watcher.disconnect().catch(() => {});
    },
  };
  await locator.locate();
  return locator;
}
