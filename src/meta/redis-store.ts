/** The Redis store lives in ./redis/ (store.ts composes it); what callers import from here stays here. */
export { createRedisStore, type RedisStoreOptions } from "./redis/store.ts";
export { parseHolders, parseRecord } from "./redis/record-codec.ts";
