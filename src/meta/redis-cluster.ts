/**
 * A filesystem on a Redis Cluster: every key of it carries one hash tag ("{mcfs}:..."), so all of it
 * lives in one hash slot, on one primary at a time (like JuiceFS). The client talks to that primary
 * alone, found with CLUSTER SLOTS on any node the URL names, and found again when it fails over or
 * the slot moves (MOVED): scripts, MULTI, SCAN and WAIT then work as on a single Redis.
 *
 * redis+cluster://[user[:password]@]host[:port][,host[:port]...][/tag][?query]: tag (default "mcfs")
 * names the filesystem; several share one cluster under different tags. query: see MultiHostUrl.
 */
import { createClient } from "redis";
import type { MasterLocator } from "./redis-failover.ts";
import { askInTurn, isOfScheme, parseMultiHostUrl, showAddress as show, socketTls, type Address, type MultiHostUrl } from "./redis-multi-url.ts";

export const CLUSTER_SCHEME = "redis+cluster://";
/** redis+cluster:// or rediss+cluster:// (TLS to every node). */
export const isClusterUrl = (url: string) => isOfScheme(url, CLUSTER_SCHEME);

export interface ClusterUrl extends MultiHostUrl {
  tag: string;
}

export function parseClusterUrl(url: string): ClusterUrl {
  const u = parseMultiHostUrl(url, CLUSTER_SCHEME, 6379);
  const tag = u.path || "mcfs";
  if (/[{}/]/.test(tag)) throw new Error(`tag "${tag}" must not hold {, } or /`);
  if (u.db) throw new Error("a Redis Cluster has only db 0");
  return { ...u, tag };
}

/** The key prefix of the filesystem a cluster URL names: its tag is the hash tag. */
export function clusterPrefix(url: string): string {
  return `{${parseClusterUrl(url).tag}}:`;
}

/** A tag that is also safe as a file name: letters, digits, '.', '_', '-', and never "." or "..". */
const isPlainTag = (tag: string) => /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/.test(tag);

/** The same cluster URL naming another filesystem: its tag replaced (user, hosts and query kept). */
export function withClusterTag(url: string, tag: string): string {
  parseClusterUrl(url);
  if (!isPlainTag(tag)) throw new Error(`tag "${tag}" must be 1..128 letters, digits, '.', '_' or '-', starting with a letter or digit`);
  const scheme = url.slice(0, url.indexOf("://") + 3);
  const rest = url.slice(scheme.length);
  const end = rest.search(/[/?]/);
  const q = rest.indexOf("?");
  return `${scheme}${end < 0 ? rest : rest.slice(0, end)}/${tag}${q < 0 ? "" : rest.slice(q)}`;
}

export function describeCluster(u: ClusterUrl): string {
  return `the primary of hash tag {${u.tag}} in the Redis Cluster of ${u.hosts.map(show).join(",")}`;
}

export async function createSlotLocator(u: ClusterUrl, password: string | undefined): Promise<MasterLocator> {
  let slot: number | undefined;

  async function ask(s: Address): Promise<Address> {
    const c = createClient({
      socket: { host: s.host, port: s.port, connectTimeout: 1000, reconnectStrategy: false, ...socketTls(u) },
      ...(u.username ? { username: u.username } : {}),
      ...((password ?? u.password) !== undefined ? { password: password ?? u.password } : {}),
      disableClientInfo: true,
    });
    c.on("error", () => {});
    try {
      await c.connect();
      slot ??= Number(await c.sendCommand(["CLUSTER", "KEYSLOT", `{${u.tag}}`]));
      // [[start, end, [host, port, id], replicas...], ...]
      const ranges = (await c.sendCommand(["CLUSTER", "SLOTS"])) as [number, number, [string, number, ...unknown[]], ...unknown[]][];
      const r = ranges.find(([start, end]) => start <= slot! && slot! <= end);
      if (!r) throw new Error(`no node serves slot ${slot}`);
      // An empty host means "the address you reached me at".
      return { host: r[2][0] || s.host, port: Number(r[2][1]) };
    } finally {
      await c.disconnect().catch(() => {});
    }
  }

  const turn = askInTurn(u.hosts, ask, (why) => `no node told where ${describeCluster(u)} is (${why})`);

  const locator: MasterLocator = {
    get master() {
      return turn.master;
    },
    locate: turn.locate,
    // The cluster announces nothing to clients: a lost connection or MOVED tells of a move.
    async watch() {},
    async close() {},
  };
  await locator.locate();
  return locator;
}
