import { describe, expect, test } from "bun:test";
import { parseSentinelUrl } from "../../src/meta/redis-sentinel.ts";
import { clusterPrefix, parseClusterUrl, withClusterTag } from "../../src/meta/redis-cluster.ts";
import { checkRedisUrl, redisAccess } from "../../src/cli/redis-options.ts";
import { rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";

describe("redis+sentinel:// and redis+cluster:// URLs", () => {
  test("sentinels, master name, user, password, query", () => {
    const u = parseSentinelUrl("redis+sentinel://mcfs:p%40ss@s1,10.0.0.2:26380,[::1]:26381/main?db=2&wait_replicas=1&wait_ms=500&failover_wait_ms=60000");
    expect(u.hosts).toEqual([{ host: "s1", port: 26379 }, { host: "10.0.0.2", port: 26380 }, { host: "::1", port: 26381 }]);
    expect({ master: u.master, username: u.username, password: u.password, db: u.db }).toEqual({ master: "main", username: "mcfs", password: "p@ss", db: 2 });
    expect({ r: u.waitReplicas, w: u.waitMs, f: u.failoverWaitMs }).toEqual({ r: 1, w: 500, f: 60000 });
  });

  test("defaults: no WAIT, 10 s for an acknowledgement, 30 s for a master", () => {
    const u = parseSentinelUrl("redis+sentinel://s1/m");
    expect({ r: u.waitReplicas, w: u.waitMs, f: u.failoverWaitMs, db: u.db }).toEqual({ r: 0, w: 10000, f: 30000, db: 0 });
  });

  test("the rediss+ forms ask for TLS to every server; --redis-ca goes with them", () => {
    expect(parseSentinelUrl("rediss+sentinel://s1/m").tls).toBe(true);
    expect(parseSentinelUrl("redis+sentinel://s1/m").tls).toBe(false);
    expect(parseClusterUrl("rediss+cluster://a:7000").tls).toBe(true);
    expect(clusterPrefix("rediss+cluster://a:7000/fs3")).toBe("{fs3}:");
    expect(() => checkRedisUrl("--redis_url", "rediss+sentinel://s1:26379/m")).not.toThrow();
    const ca = `${tmpdir()}/mcfs-unit-ca-${process.pid}.crt`;
    writeFileSync(ca, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
    try {
      expect(redisAccess({ "redis-ca": ca }, "rediss+sentinel://s1/m").ca).toBeDefined();
      expect(() => redisAccess({ "redis-ca": ca }, "redis+sentinel://s1/m")).toThrow("--redis-ca is for a TLS Redis URL");
    } finally {
      rmSync(ca);
    }
  });

  test("a cluster URL's tag is its path (default mcfs) and makes the key prefix", () => {
    expect(parseClusterUrl("redis+cluster://a:7000,b:7001").hosts).toEqual([{ host: "a", port: 7000 }, { host: "b", port: 7001 }]);
    expect(clusterPrefix("redis+cluster://a:7000")).toBe("{mcfs}:");
    expect(clusterPrefix("redis+cluster://a:7000/fs2?wait_replicas=1")).toBe("{fs2}:");
  });

  test("another tag in the same cluster URL: user, hosts and query kept; a tag that is no plain file name refused", () => {
    expect(withClusterTag("redis+cluster://u:p@a:7000,b:7001/mcfs?wait_replicas=1", "mcfs-v0a")).toBe("redis+cluster://u:p@a:7000,b:7001/mcfs-v0a?wait_replicas=1");
    expect(withClusterTag("rediss+cluster://a:7000", "v1")).toBe("rediss+cluster://a:7000/v1");
    expect(withClusterTag("redis+cluster://a:7000?wait_ms=5", "v1")).toBe("redis+cluster://a:7000/v1?wait_ms=5");
    expect(parseClusterUrl(withClusterTag("redis+cluster://a:7000/x", "v.2_b-c")).tag).toBe("v.2_b-c");
    for (const bad of ["", ".", "..", ".hidden", "a/b", "a}b", "a b", "x".repeat(129)]) expect(() => withClusterTag("redis+cluster://a:7000", bad)).toThrow("tag");
  });

  test("what is wrong is named, never the password", () => {
    const msg = (url: string) => {
      try {
        checkRedisUrl("--redis_url", url);
        return "";
      } catch (e) {
        return (e as Error).message;
      }
    };
    expect(msg("redis+sentinel://u:secret@s1:26379")).toContain("names no master");
    expect(msg("redis+sentinel://u:secret@s1:99999/m")).toContain("not host[:port]");
    expect(msg("redis+sentinel://s1/m?wait=1")).toContain('unknown parameter "wait"');
    expect(msg("redis+sentinel://s1/m?wait_ms=soon")).toContain("not a whole number");
    expect(msg("redis+cluster://a:7000/x{y}")).toContain("must not hold");
    expect(msg("redis+cluster://a:7000?db=1")).toContain("only db 0");
    for (const u of ["redis+sentinel://u:secret@s1:26379", "redis+sentinel://u:secret@s1:99999/m"]) expect(msg(u)).not.toContain("secret");
    expect(msg("redis+sentinel://s1,s2:26380/m?wait_replicas=1")).toBe("");
    expect(msg("redis+cluster://a:7000,b:7001/fs")).toBe("");
  });
});
