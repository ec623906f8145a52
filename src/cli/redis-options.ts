import type { Argv } from "yargs";
import type { RedisAccess } from "../meta/redis-connect.ts";
import { redactUrl } from "../util/log.ts";
import { readFlagFile } from "../util/flag-file.ts";
import { isSentinelUrl, parseSentinelUrl, SENTINEL_SCHEME } from "../meta/redis-sentinel.ts";
import { CLUSTER_SCHEME, isClusterUrl, parseClusterUrl } from "../meta/redis-cluster.ts";

/** The forms of -u/--redis_url, for --help. */
export const REDIS_URL_FORMS =
  "redis://[user:pass@]host:port[/db], rediss:// (TLS), unix:///path/to/socket, or redis+sentinel://[user:pass@]host:port,host:port,.../master-name[?db=N&wait_replicas=N&wait_ms=MS&failover_wait_ms=MS] (follows the sentinels' master through a failover), or redis+cluster://[user:pass@]host:port,host:port,...[/tag][?wait_replicas=N&wait_ms=MS&failover_wait_ms=MS] (Redis Cluster: all keys under hash tag {tag}, default {mcfs}); rediss+sentinel:// and rediss+cluster:// for TLS; see README";

/** --redis-ca, --redis-password-file and --redis-sentinel-password-file, the same for every role that connects to Redis. */
export function redisAccessOptions<T>(y: Argv<T>) {
  return y
    .option("redis-ca", { type: "string", describe: "PEM CA certificate that signed the certificates of a TLS Redis (rediss://, rediss+sentinel://, rediss+cluster://) [default: the system CAs]" })
    .option("redis-password-file", { type: "string", describe: "File holding the password of the Redis URL's user (any local user can read a password given in the URL from the command line)" })
    .option("redis-sentinel-password-file", { type: "string", describe: "File holding the password of the sentinels themselves (their requirepass), for a redis+sentinel:// URL whose sentinels ask for one" });
}

/** Where the Redis URL may point; a URL that cannot be used is named with what is wrong in it. */
export function checkRedisUrl(flag: string, url: string): void {
  if (isSentinelUrl(url) || isClusterUrl(url)) {
    try {
      if (isSentinelUrl(url)) parseSentinelUrl(url);
      else parseClusterUrl(url);
    } catch (e) {
      throw new Error(`${flag} "${redactUrl(url)}": ${(e as Error).message}`);
    }
    return;
  }
  if (!/^(redis|rediss|unix):\/\//.test(url)) throw new Error(`${flag} must start with redis://, rediss://, unix://, ${SENTINEL_SCHEME} or ${CLUSTER_SCHEME}, got "${redactUrl(url)}"`);
  // The URL parser's own message is only "Invalid URL": the port is the part people get wrong.
  const port = /^rediss?:\/\/(?:[^@/?#]*@)?(?:\[[^\]/]*\]|[^:/?#[]*):([^/?#]*)/.exec(url)?.[1];
  if (port !== undefined && port !== "" && !(/^\d+$/.test(port) && Number(port) >= 1 && Number(port) <= 65535))
    throw new Error(`${flag} "${redactUrl(url)}": port "${port}" is not a port number (1-65535)`);
  try {
    new URL(url);
  } catch {
    throw new Error(`${flag} "${redactUrl(url)}" is not a valid URL`);
  }
}

/** The CA and password the flags name, read now so that a bad file is named before anything starts. */
export function redisAccess(a: { "redis-ca"?: string; "redis-password-file"?: string; "redis-sentinel-password-file"?: string }, url: string | undefined): RedisAccess {
  const access: RedisAccess = {};
  if (a["redis-ca"] !== undefined) {
    if (!/^rediss(\+sentinel|\+cluster)?:\/\//.test(url ?? "")) throw new Error(`--redis-ca is for a TLS Redis URL (rediss://, rediss+sentinel:// or rediss+cluster://), got ${url === undefined ? "none" : `"${redactUrl(url)}"`}`);
    access.ca = readFlagFile("--redis-ca", a["redis-ca"]);
    if (!access.ca.toString("latin1").includes("-----BEGIN CERTIFICATE-----")) throw new Error(`--redis-ca ${a["redis-ca"]} is not a PEM certificate`);
  }
  if (a["redis-password-file"] !== undefined) {
    if (url === undefined) throw new Error("--redis-password-file needs a Redis URL (-u)");
    if (/\/\/[^/@]*:[^/@]*@/.test(url)) throw new Error("the Redis password is given twice: in the URL and in --redis-password-file; keep only the file");
    access.password = passwordIn("--redis-password-file", a["redis-password-file"]);
  }
  if (a["redis-sentinel-password-file"] !== undefined) {
    if (url === undefined || !isSentinelUrl(url)) throw new Error(`--redis-sentinel-password-file is for a ${SENTINEL_SCHEME} URL, got ${url === undefined ? "none" : `"${redactUrl(url)}"`}`);
    access.sentinelPassword = passwordIn("--redis-sentinel-password-file", a["redis-sentinel-password-file"]);
  }
  return access;
}

/** The password in a flag's file: one line (the newline an editor or `echo` leaves is not part of it). */
function passwordIn(flag: string, file: string): string {
  const password = readFlagFile(flag, file).toString("utf8").replace(/\r?\n$/, "");
  if (!password) throw new Error(`${flag} ${file} is empty`);
  return password;
}
