/**
 * Finding the Redis master through Redis Sentinel: the redis+sentinel:// URL, and the sentinels asked
 * where the master of a name is (SENTINEL get-master-addr-by-name), again whenever the caller lost it,
 * and listened to for the steps of a failover.
 */
import { createClient } from "redis";
import type { MasterLocator, SwitchEvents } from "./redis-failover.ts";
import { askInTurn, isOfScheme, parseMultiHostUrl, showAddress as show, socketTls, type Address, type MultiHostUrl } from "./redis-multi-url.ts";

/**
 * redis+sentinel://[user[:password]@]host[:port][,host[:port]...]/master-name[?query]: the user and
 * password are the master's (the sentinels' own password is given apart); query: see MultiHostUrl.
 */
export interface SentinelUrl extends MultiHostUrl {
  master: string;
}

export const SENTINEL_SCHEME = "redis+sentinel://";
/** redis+sentinel:// or rediss+sentinel:// (TLS to the sentinels and the master). */
export const isSentinelUrl = (url: string) => isOfScheme(url, SENTINEL_SCHEME);

export function parseSentinelUrl(url: string): SentinelUrl {
  const u = parseMultiHostUrl(url, SENTINEL_SCHEME, 26379);
  if (!u.path || u.path.includes("/")) throw new Error(`names no master: add /<master-name> after the sentinels`);
  return { ...u, master: u.path };
}

export function describeSentinels(u: SentinelUrl): string {
  return `master "${u.master}" of sentinels ${u.hosts.map(show).join(",")}`;
}

/** The sentinels of the URL, asked in turn (the last that answered first) and all listened to. */
export async function createSentinelLocator(u: SentinelUrl, password?: string): Promise<MasterLocator> {
  const watchers: ReturnType<typeof createClient>[] = [];
  const auth = password !== undefined ? { password } : {};

  async function ask(s: Address): Promise<Address> {
    const c = createClient({ socket: { host: s.host, port: s.port, connectTimeout: 1000, reconnectStrategy: false, ...socketTls(u) }, disableClientInfo: true, ...auth });
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

  const turn = askInTurn(u.hosts, ask, (why) => `no sentinel told where ${describeSentinels(u)} is (${why})`);

  const locator: MasterLocator = {
    get master() {
      return turn.master;
    },
    locate: turn.locate,
    async watch(on: SwitchEvents) {
      // Every sentinel: only the leader of a failover announces its steps.
      for (const a of u.hosts) {
        const c = createClient({ socket: { host: a.host, port: a.port, connectTimeout: 1000, reconnectStrategy: () => 1000, ...socketTls(u) }, disableClientInfo: true, ...auth });
        watchers.push(c);
        c.on("error", () => {});
        // A new connection may have missed a switch announced meanwhile.
        let first = true;
        c.on("ready", () => {
          if (!first) on.moved("heard again");
          first = false;
        });
        const ours = (msg: string) => msg.startsWith(`${u.master} `) || msg.includes(` @ ${u.master} `) || msg.startsWith(`master ${u.master} `);
        // Announced before the replica is told to become master: from then on the old master's
        // writes reach its other replicas (WAIT counts them) but are lost when it is demoted.
        const moving = (msg: string) => void (ours(msg) && on.moving());
        // The sentinel that announced the new master is asked first where it is.
        const switched = (msg: string) => {
          if (!ours(msg)) return;
          turn.first(a);
          on.moved("switched");
        };
        // Not waited for: a sentinel down now is subscribed to once it answers.
        void c.connect().catch(() => {});
        void Promise.all([
          c.subscribe("+selected-slave", moving),
          c.subscribe(["+promoted-slave", "+switch-master"], switched),
          c.pSubscribe("-failover-abort-*", (msg) => void (ours(msg) && on.moved("aborted"))),
        ]).catch(() => {});
      }
    },
    async close() {
      await Promise.all(watchers.map((c) => (c.isOpen ? c.disconnect().catch(() => {}) : undefined)));
    },
  };
  await locator.locate();
  return locator;
}
