/** The tree: inode records, directory entries and hard-link names; every change is one script. */
import { createdChange, createdRecord, createStamps, newVersion, type AttrChange, type Created, type Inode, type Namespace, type NewName, type Removed, type Renamed } from "../store.ts";
import type { RedisClient } from "../redis-connect.ts";
import { fsError, scriptRefusal } from "../../util/errno.ts";
import { nowNs } from "../../util/time.ts";
import { S_IFDIR } from "../../util/file-mode.ts";
import type { RedisChangeFeed } from "./change-feed.ts";
import type { RedisInodeNumbers } from "./inode-numbers.ts";
import type { Keys } from "./keys.ts";
import { parseEntries, parseExtraName, parseScriptRecord, scriptRecord } from "./record-codec.ts";
import type { RunScript } from "./scripts.ts";


type Stamps = ReturnType<typeof createStamps>;

export interface NamespaceDeps {
  client: RedisClient;
  keys: Keys;
  run: RunScript;
  /** This node: the origin of its changes, told apart in todo lists. */
  nodeId: string;
  numbers: RedisInodeNumbers;
  feed: RedisChangeFeed;
}

export function createNamespace({ client, keys, run, nodeId, numbers, feed }: NamespaceDeps): Namespace {
  const { publish } = feed;
  /** create.lua's arguments after the prefix (createmany.lua takes them for each file in turn). */
  const createArgs = ({ parent, name, init }: NewName, st: Stamps) => [parent, name, init.mode, init.uid, init.gid, init.rdev ?? 0, init.size ?? 0, st.atime, st.mtime, st.now, init.target ?? "", init.holder ?? "", init.ino ?? "", st.version, init.above ?? 0, st.gen, init.replace ?? "", nodeId, st.changed];
  /** The record create.lua's answer makes, once the nodes watching its directory heard of it. */
  async function made({ parent, name, init }: NewName, st: Stamps, answer: unknown): Promise<Created> {
    const [ino, mode, gid, raised, rino, rn, told, ctime, nlink, watchers] = answer as [number, number, number, number, number, number, string[], string, number, string[]];
    numbers.created(ino, !!raised);
    const replaced = rino ? { ino: rino, nlink: rn, dir: false } : undefined;
    const sent = publish(createdChange(parent, name, ino, replaced, told, { ctime, nlink }), false, watchers);
    if (watchers.length) await sent;
    return createdRecord(parent, name, init, st, { ino, mode, gid }, replaced);
  }
  return {
    async init(rootMode, uid, gid) {
      const now = nowNs().toString();
      const created = await client.hSetNX(keys.inode(1), "m", String(S_IFDIR | (rootMode & 0o7777)));
      if (created) {
        await client.hSet(keys.inode(1), { u: uid, g: gid, r: 0, s: 0, n: 2, a: now, t: now, c: now, v: 1, p: 0, nm: "" });
        await client.setNX(keys.next, "1");
      }
    },
    async get(ino) {
      const [r] = (await run("records", [ino])) as unknown[];
      const rec = scriptRecord(r);
      if (!rec) throw fsError("ENOENT", `inode ${ino} not found`);
      return rec;
    },
    async getMany(inos) {
      if (!inos.length) return [];
      return ((await run("records", inos)) as unknown[]).map(scriptRecord);
    },
    async lookup(parent, name) {
      const r = await run("lookup", [parent, name]);
      if (r === null) throw fsError("ENOENT");
      return parseScriptRecord(r);
    },
    async create(parent, name, init) {
      const st = createStamps(init);
      return made({ parent, name, init }, st, await run("create", createArgs({ parent, name, init }, st)));
    },
    async createMany(creates) {
      const stamps = creates.map((c) => createStamps(c.init));
      const answers = (await run("createmany", creates.flatMap((c, i) => createArgs(c, stamps[i]!)))) as unknown[];
      return Promise.all(answers.map((a, i) => (typeof a === "string" ? (scriptRefusal(a) ?? new Error(a)) : made(creates[i]!, stamps[i]!, a))));
    },
    async link(ino, newParent, newName) {
      const [told, packed, watchers, from, to] = (await run("link", [ino, newParent, newName, nowNs(), nodeId])) as [string[], unknown, string[], string, string];
      const record = parseScriptRecord(packed);
      // Its link count is an attribute every node's kernel may hold: as a chmod, the link returns once they dropped it.
      await publish({ added: [[newParent, newName, ino]], inodes: [ino, newParent], todo: told }, true, watchers);
      return { record, from, to };
    },
    async extraNames(ino) {
      return (await client.sMembers(keys.links(ino))).map(parseExtraName);
    },
    async remove(parent, name, dir, by, only) {
      const r = (await run("remove", [parent, name, dir ? 1 : 0, nowNs(), nodeId, by ?? "", only?.ino ?? "", only?.version ?? ""])) as [number, number, number, string[], string, string, number | undefined];
      await publish({ removed: [[parent, name]], inodes: [parent, r[0]], todo: r[3] }, true);
      const flags = { ...(r[3].includes(nodeId) ? { queued: true } : {}), ...(r[6] ? { behind: true } : {}) };
      return { ino: r[0], nlink: r[1], dir: r[2] === 1, path: r[5], ...(r[4] ? { held: Number(r[4]) } : {}), ...flags };
    },
    async rename(parent, name, newParent, newName, flags, by) {
      const r = (await run("rename", [parent, name, newParent, newName, flags, nowNs(), nodeId, by ?? ""])) as [number, number, number, number, number, string[], string | null | undefined, string[] | undefined, string | undefined, string | undefined];
      const moved = [parent, newParent, r[0]!, ...(r[1] ? [r[1]] : []), ...(r[4] ? [r[4]] : [])];
      const told = r[5];
      const watchers = r[7] ?? [];
      if (r[4]) await publish({ removed: [[parent, name], [newParent, newName]], added: [[parent, name, r[4]], [newParent, newName, r[0]]], inodes: moved, todo: told }, true, watchers);
      else await publish({ removed: [[parent, name], [newParent, newName]], added: [[newParent, newName, r[0]]], inodes: moved, todo: told }, true, watchers);
      const out: Renamed = { ino: r[0]! };
      if (r[1]) out.replaced = { ino: r[1], nlink: r[2]!, dir: r[3] === 1, ...(r[6] ? { held: Number(r[6]) } : {}) } satisfies Removed;
      if (r[4]) out.exchanged = r[4];
      if (r[8] !== undefined && r[9] !== undefined) Object.assign(out, { from: r[8], to: r[9] });
      if (told.includes(nodeId)) out.queued = true;
      return out;
    },
    async setAttrs(ino, ch: AttrChange) {
      const kv: (string | number | bigint)[] = ["c", nowNs()];
      if (ch.mode !== undefined) kv.push("m", ch.mode);
      if (ch.uid !== undefined) kv.push("u", ch.uid);
      if (ch.gid !== undefined) kv.push("g", ch.gid);
      if (ch.atime !== undefined) kv.push("a", ch.atime);
      if (ch.mtime !== undefined) kv.push("t", ch.mtime);
      const r = parseScriptRecord(await run("setattrs", [ino, ...kv]));
      await publish({ inodes: [ino] }, true);
      return r;
    },
    async setData(ino, size, mtime, ctime, holder, path, opts = {}) {
      const [told, flat, watchers] = (await run("setdata", [ino, size, mtime, ctime, holder, path, opts.version ?? newVersion()])) as [string[], unknown, string[]];
      const others = watchers.filter((n) => n !== nodeId);
      const sent = publish({ inodes: [ino], data: [ino], todo: told }, opts.acked, others);
      if (opts.acked || others.length) await sent;
      return parseScriptRecord(flat);
    },
    async purge(ino) {
      await run("purge", [ino]);
    },
    async deleted(inos) {
      if (!inos.length) return [];
      return (await client.zmScore(keys.gone, inos.map(String))).map((at) => at !== null);
    },
    async listDir(ino, watch = false) {
      if (watch) {
        const flat = (await run("listing", [ino, nodeId])) as string[];
        const ents: Record<string, string> = {};
        for (let i = 0; i + 1 < flat.length; i += 2) ents[flat[i]!] = flat[i + 1]!;
        return parseEntries(ents);
      }
      // Plain reads: a script is a change, which waits for the replicas (--redis-replica-acks).
      const [exists, ents] = await Promise.all([client.hGet(keys.inode(ino), "m"), client.hGetAll(keys.entries(ino))]);
      // node-redis answers null for a missing field.
      if (exists == null) throw fsError("ENOENT");
      return parseEntries(ents);
    },
  };
}
