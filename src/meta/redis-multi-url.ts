/**
 * The URLs that name several servers (redis+sentinel://, redis+cluster://, and rediss+... for TLS to
 * every one of them), which WHATWG URL cannot parse:
 * scheme://[user[:password]@]host[:port][,host[:port]...][/path][?query].
 */
export interface Address {
  host: string;
  port: number;
}

export interface MultiHostUrl {
  hosts: Address[];
  username?: string;
  password?: string;
  path: string;
  /** db, wait_replicas, wait_ms, failover_wait_ms (whole numbers). */
  db: number;
  /** Replicas that must acknowledge each namespace change (0: none waited for). */
  waitReplicas: number;
  waitMs: number;
  /** How long an operation waits for a master before failing with EIO. */
  failoverWaitMs: number;
  /** TLS to every server (the rediss+ form), verified against ca (else the system CAs). */
  tls: boolean;
  ca?: Buffer;
}

/** Whether url is of scheme ("redis+x://") or its TLS form ("rediss+x://"). */
export const isOfScheme = (url: string, scheme: string) => url.startsWith(scheme) || url.startsWith(tlsForm(scheme));
const tlsForm = (scheme: string) => scheme.replace(/^redis\+/, "rediss+");

/** The socket options of a connection to one of the URL's servers: TLS when the URL asks for it. */
export function socketTls(u: Pick<MultiHostUrl, "tls" | "ca">): { tls?: true; ca?: Buffer } {
  return u.tls ? { tls: true, ...(u.ca ? { ca: u.ca } : {}) } : {};
}

const QUERY = new Set(["db", "wait_replicas", "wait_ms", "failover_wait_ms"]);

/** The parts of such a URL; a wrong part is named (never with the password). */
export function parseMultiHostUrl(url: string, scheme: string, defaultPort: number): MultiHostUrl {
  const tls = url.startsWith(tlsForm(scheme));
  if (!tls && !url.startsWith(scheme)) throw new Error(`not a ${scheme} URL`);
  const rest = url.slice((tls ? tlsForm(scheme) : scheme).length);
  const end = rest.search(/[/?]/);
  const authority = end < 0 ? rest : rest.slice(0, end);
  const tail = end < 0 ? "" : rest.slice(end);
  const q = tail.indexOf("?");
  const path = decodeURIComponent((q < 0 ? tail : tail.slice(0, q)).replace(/^\//, ""));
  const query = q < 0 ? "" : tail.slice(q + 1);
  const at = authority.lastIndexOf("@");
  const hosts = at < 0 ? authority : authority.slice(at + 1);
  const out: MultiHostUrl = { hosts: [], path, db: 0, waitReplicas: 0, waitMs: 10_000, failoverWaitMs: 30_000, tls };
  if (at >= 0) {
    const userinfo = authority.slice(0, at);
    const colon = userinfo.indexOf(":");
    const user = decodeURIComponent(colon < 0 ? userinfo : userinfo.slice(0, colon));
    if (user) out.username = user;
    if (colon >= 0) out.password = decodeURIComponent(userinfo.slice(colon + 1));
  }
  for (const h of hosts.split(",")) {
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(\d+))?$/.exec(h);
    const port = m?.[2] === undefined ? defaultPort : Number(m[2]);
    if (!m || !(port >= 1 && port <= 65535)) throw new Error(`"${h}" is not host[:port]`);
    out.hosts.push({ host: m[1]!.replace(/^\[|\]$/g, ""), port });
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

export const showAddress = (a: Address) => (a.host.includes(":") ? `[${a.host}]:${a.port}` : `${a.host}:${a.port}`);

/** The servers of such a URL, asked in turn where the master is. */
export interface ServersInTurn {
  /** Where the master was last found. */
  readonly master: Address;
  /** Ask now, the server that answered last first; calls while one asks share its answer. */
  locate(): Promise<Address>;
  /** Ask this server first next time (it just announced a switch). */
  first(a: Address): void;
}

/** nobody: the error when no server answered, given each one's reason. */
export function askInTurn(hosts: Address[], ask: (s: Address) => Promise<Address>, nobody: (why: string) => string): ServersInTurn {
  const order = [...hosts];
  let asking: Promise<Address> | undefined;
  const turn = {
    master: { host: "", port: 0 } as Address,
    first(a: Address) {
      const i = order.findIndex((o) => o.host === a.host && o.port === a.port);
      if (i > 0) order.unshift(...order.splice(i, 1));
    },
    locate() {
      asking ??= (async () => {
        const why: string[] = [];
        for (const s of [...order]) {
          try {
            turn.master = await ask(s);
            turn.first(s);
            return turn.master;
          } catch (e) {
            why.push(`${showAddress(s)}: ${(e as Error).message}`);
          }
        }
        throw new Error(nobody(why.join("; ")));
      })().finally(() => (asking = undefined));
      return asking;
    },
  };
  return turn;
}
