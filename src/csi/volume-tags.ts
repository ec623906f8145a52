import { randomBytes } from "node:crypto";
import { connectRedis, type RedisAccess, type RedisClient } from "../meta/redis-connect.ts";
import { withClusterTag } from "../meta/redis-cluster.ts";

/**
 * The filesystems of volumes on a Redis Cluster: each under a tag <base>-v<12 hex digits> made by the
 * controller (base: the driver's own tag), all its keys "{tag}:..." in one slot, on one primary.
 */
export const newVolumeTag = (base: string) => `${base}-v${randomBytes(6).toString("hex")}`;

/** Only a tag of that form is ever acted on: a record edited to name another filesystem (or the registry's) is refused. */
export const isVolumeTag = (base: string, tag: string) => tag.startsWith(`${base}-v`) && /^[0-9a-f]{12}$/.test(tag.slice(base.length + 2));

const BATCH = 500;

/** Run fn with a client on the primary of the tag's slot. */
export async function onFilesystem<T>(url: string, access: RedisAccess, tag: string, fn: (c: RedisClient) => Promise<T>): Promise<T> {
  const c = await connectRedis({ url: withClusterTag(url, tag), ...access });
  try {
    return await fn(c);
  } finally {
    await c.quit().catch(() => c.disconnect());
  }
}

async function scan(c: RedisClient, match: string, each: (batch: string[]) => Promise<void>): Promise<void> {
  let batch: string[] = [];
  for await (const k of c.scanIterator({ MATCH: match, COUNT: 1000 })) {
    batch.push(k);
    if (batch.length >= BATCH) await each(batch.splice(0));
  }
  if (batch.length) await each(batch);
}

/** Nodes whose daemon of the filesystem beats (its heartbeat key lives). */
export async function servingNodes(c: RedisClient, tag: string): Promise<string[]> {
  const out: string[] = [];
  await scan(c, `{${tag}}:hb:*`, async (b) => void out.push(...b.map((k) => k.slice(`{${tag}}:hb:`.length))));
  return out;
}

/** Remove every key of the filesystem; returns how many there were. */
export async function dropFilesystem(c: RedisClient, tag: string): Promise<number> {
  let n = 0;
  await scan(c, `{${tag}}:*`, async (b) => {
    n += b.length;
    await c.unlink(b);
  });
  return n;
}
