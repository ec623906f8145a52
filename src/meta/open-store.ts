import type { MetadataStore } from "./store.ts";
import { createRedisStore, type RedisStoreOptions } from "./redis-store.ts";

export type StoreOptions = RedisStoreOptions;

/** Metadata backends by URL scheme: one place decides which store a URL names. */
const BACKENDS: Record<string, (o: StoreOptions) => Promise<MetadataStore>> = {
  "redis:": createRedisStore,
  "rediss:": createRedisStore,
  "unix:": createRedisStore,
  "redis+sentinel:": createRedisStore,
  "redis+cluster:": createRedisStore,
  "rediss+sentinel:": createRedisStore,
  "rediss+cluster:": createRedisStore,
};

/** The metadata store a URL names; an unknown scheme is refused with the ones known. */
export function openStore(o: StoreOptions): Promise<MetadataStore> {
  const scheme = /^[a-z0-9+.-]+:/i.exec(o.url)?.[0]?.toLowerCase() ?? "";
  const open = BACKENDS[scheme];
  if (!open) throw new Error(`metadata URL scheme ${JSON.stringify(scheme || o.url)} is not one of ${Object.keys(BACKENDS).map((s) => `${s}//`).join(", ")}`);
  return open(o);
}
