/** Extended attributes: P x:{ino}, values kept as bytes. */
import { commandOptions } from "redis";
import type { RedisClient } from "../redis-connect.ts";
import { XATTRS_MAX, type ExtendedAttributes } from "../store.ts";
import { nowNs } from "../../util/time.ts";
import type { RedisChangeFeed } from "./change-feed.ts";
import type { Keys } from "./keys.ts";
import type { RunScript } from "./scripts.ts";

export function createXattrs(client: RedisClient, keys: Keys, run: RunScript, feed: RedisChangeFeed): ExtendedAttributes {
  return {
    async getXattr(ino, name) {
      const v = await client.hGet(commandOptions({ returnBuffers: true }), keys.xattrs(ino), name);
      return v === undefined || v === null ? undefined : new Uint8Array(v);
    },
    async setXattr(ino, name, value, flags) {
      await run("setxattr", [ino, name, Buffer.from(value), flags, nowNs(), XATTRS_MAX]);
      feed.publish({ inodes: [ino] });
    },
    async listXattr(ino) {
      return client.hKeys(keys.xattrs(ino));
    },
    async removeXattr(ino, name) {
      await run("removexattr", [ino, name, nowNs()]);
      feed.publish({ inodes: [ino] });
    },
  };
}
