/**
 * MetadataStore in memory, for unit tests of what sits above the store (caches, CSI controller).
 *
 * It mirrors the Redis store (redis/) operation by operation: the same key map held in JS maps (values
 * kept as the strings Redis would hold, decoded by the same codec), each Lua script as one synchronous function
 * (atomic as a script is: nothing else runs between its first read and its last write), and the same
 * change feed with acknowledgements. Several stores opened on one MemorySpace are several nodes on one
 * Redis. It passes the contract suite that the Redis store passes (test/contract/store-contract.ts),
 * and test/store-differential.test.ts holds it to the Redis store's answers. It is never a stand-in
 * for Redis in filesystem tests.
 */
import { parseHolders, parseRecord } from "./redis/record-codec.ts";
import { createdChange, createdRecord, createStamps, newVersion, type CopyOrder, type Created, type DirListing, type Holders, type Inode, type Invalidation, type MetadataStore, type NewInode, type NodeInfo, type NodeReport, type NodeState, type Removed, type Renamed, type ScannedInode, type TodoEntry, XATTRS_MAX } from "./store.ts";
import { fsError } from "../util/errno.ts";
import { awaits, createChangeOutbox, type FeedMessage, type SlowNodesEvent } from "./change-outbox.ts";
import { nowNs } from "../util/time.ts";
import { S_IFMT, S_IFDIR, S_IFREG, S_ISGID } from "../util/file-mode.ts";

/** As in redis/change-feed.ts: longest a rename or unlink waits for the other nodes' acknowledgements. */
const BATCH = 1000;

type Hash = Map<string, string>;

/** What one Redis would hold: shared by every store opened on it. */
export interface MemorySpace {
  /** Like Redis's run_id: the identity of this "server" run. */
  readonly runId: string;
  /** P next; absent until init or a reservation. */
  next: number | undefined;
  /** P i:{ino}, P d:{ino}, P l:{ino}, P x:{ino}, P loc:{ino}, P cc:{ino}, P cb:{ino}, P dw:{ino}. */
  readonly i: Map<number, Hash>;
  readonly d: Map<number, Hash>;
  readonly l: Map<number, Set<string>>;
  readonly x: Map<number, Map<string, Uint8Array>>;
  readonly loc: Map<number, Hash>;
  readonly cc: Map<number, Hash>;
  readonly cb: Map<number, Set<string>>;
  readonly dw: Map<number, Set<string>>;
  readonly orphans: Set<number>;
  /** P gone: deleted inodes (files and directories) -> when (ms since the epoch). */
  readonly gone: Map<number, number>;
  readonly nodes: Hash;
  /** P hb:{node}: when it expires (ms since the epoch). */
  readonly hb: Map<string, number>;
  readonly seen: Hash;
  /** P w:{ino}: the lease holder and when it expires. */
  readonly w: Map<number, { node: string; until: number }>;
  readonly todo: Map<string, string[]>;
  /** P copy:{node}, P settings, P repair (holder and expiry). */
  readonly copies: Map<string, string[]>;
  readonly settings: Hash;
  repair: { node: string; until: number } | undefined;
  /** Pub/sub channels: subscribers of each. */
  readonly channels: Map<string, Set<(msg: string) => void>>;
}

export function createMemorySpace(): MemorySpace {
  return {
    runId: Buffer.from(crypto.getRandomValues(new Uint8Array(20))).toString("hex"),
    next: undefined,
    i: new Map(), d: new Map(), l: new Map(), x: new Map(), loc: new Map(), cc: new Map(), cb: new Map(), dw: new Map(),
    orphans: new Set(), gone: new Map(), nodes: new Map(), hb: new Map(), seen: new Map(), w: new Map(), todo: new Map(),
    copies: new Map(), settings: new Map(), repair: undefined,
    channels: new Map(),
  };
}

export interface MemoryStoreOptions {
  /** The shared metadata (one Redis); a new one by default. */
  space?: MemorySpace;
  /** This node: the origin of the changes it publishes. */
  nodeId?: string;
  /** As RedisStoreOptions.waitForAcks. */
  waitForAcks?: boolean;
  onSlowNodes?: (event: SlowNodesEvent, nodes: string[]) => void;
}

function made<K, V>(m: Map<K, V>, k: K, make: () => V): V {
  let v = m.get(k);
  if (v === undefined) m.set(k, (v = make()));
  return v;
}
const hashOf = (m: Map<number, Hash>, k: number): Hash => made(m, k, () => new Map());
const isdir = (m: string | undefined) => m !== undefined && (Number(m) & S_IFMT) === S_IFDIR;
const entino = (e: string) => Number(e.slice(0, e.indexOf(":")));
const decode = (ino: number, h: Hash): Inode => parseRecord(ino, Object.fromEntries(h));

export function createMemoryStore(opts: MemoryStoreOptions = {}): MetadataStore {
  const s = opts.space ?? createMemorySpace();
  const nodeId = opts.nodeId ?? "memory";
  let handedOut = 0;
  let wentBack = false;

  // --- the Lua library (redis/lib.lua) ---

  function needdir(ino: number): void {
    const m = s.i.get(ino)?.get("m");
    if (m === undefined) throw fsError("ENOENT", `directory ${ino} is gone`);
    if (!isdir(m)) throw fsError("ENOTDIR");
  }
  /** As lib.lua's sticky: who may take ino's name away from dir, checked against the file there now. */
  function sticky(dir: number, ino: number, by: number | undefined): void {
    if (by === undefined || by === 0) return;
    const d = s.i.get(dir);
    if (!(Number(d?.get("m")) & 0o1000) || d?.get("u") === String(by) || s.i.get(ino)?.get("u") === String(by)) return;
    throw fsError("EPERM");
  }
  function touch(ino: number, now: string): void {
    const h = hashOf(s.i, ino);
    const cur = h.get("c");
    const t = cur !== undefined && BigInt(now) <= BigInt(cur) ? String(BigInt(cur) + 1n) : now;
    h.set("t", t);
    h.set("c", t);
  }
  function incr(ino: number, by: number): number {
    const h = hashOf(s.i, ino);
    const n = Number(h.get("n") ?? 0) + by;
    h.set("n", String(n));
    return n;
  }
  function setname(ino: number, op: number, on: string, np: number, nn: string): void {
    const h = hashOf(s.i, ino);
    if (h.get("p") === String(op) && h.get("nm") === on) {
      h.set("p", String(np));
      h.set("nm", nn);
    } else {
      const l = made(s.l, ino, () => new Set());
      l.delete(`${op}/${on}`);
      l.add(`${np}/${nn}`);
    }
  }
  function dropname(ino: number, parent: number, name: string, now: string): number {
    const n = incr(ino, -1);
    const h = hashOf(s.i, ino);
    h.set("c", now);
    const l = s.l.get(ino);
    if (h.get("p") === String(parent) && h.get("nm") === name) {
      const alt = l?.values().next().value;
      if (alt !== undefined) {
        l!.delete(alt);
        const slash = alt.indexOf("/");
        h.set("p", alt.slice(0, slash));
        h.set("nm", alt.slice(slash + 1));
      }
    } else l?.delete(`${parent}/${name}`);
    if (l?.size === 0) s.l.delete(ino);
    if (n <= 0) s.orphans.add(ino);
    return n;
  }
  /** Queue entry for the holders of ino (or of each of several, once per node), or every known node; returns those told. */
  function todo(origin: string, ino: number | number[] | undefined, entry: TodoEntry & { id?: string }): string[] {
    let nodes: string[];
    if (Array.isArray(ino)) nodes = [...new Set(ino.flatMap((i) => [...(s.loc.get(i)?.keys() ?? [])]))];
    else if (ino !== undefined) {
      nodes = [...(s.loc.get(ino)?.keys() ?? [])];
      if (entry.op !== "swap") entry.id = `${ino}:${s.i.get(ino)?.get("gn") ?? ""}`;
      if (entry.op === "rm") entry.last = Number(s.i.get(ino)?.get("n") ?? "1") <= 1;
    } else nodes = [...s.nodes.keys()];
    const told = nodes.filter((n) => n !== origin);
    for (const n of told) {
      if (entry.op === "rm" && typeof ino === "number") {
        const v = s.loc.get(ino)?.get(n);
        if (v === undefined) delete entry.v;
        else entry.v = v;
      }
      made(s.todo, n, () => []).push(JSON.stringify(entry));
    }
    return told;
  }
  function dropdir(ino: number): void {
    for (const m of [s.i, s.d, s.x, s.loc, s.cc, s.l, s.cb, s.dw]) m.delete(ino);
    gone(ino);
  }
  /** As lib.lua's newname: the watchers of dir other than this node, who watch it no more. */
  function newname(dir: number): string[] {
    const w = s.dw.get(dir);
    if (!w) return [];
    const others = [...w].filter((n) => n !== nodeId);
    if (w.has(nodeId)) s.dw.set(dir, new Set([nodeId]));
    else s.dw.delete(dir);
    return others;
  }
  /** As lib.lua's GONE_KEEP. */
  const GONE_KEEP_MS = 30 * 86_400_000;
  function dropRecord(ino: number): void {
    for (const m of [s.i, s.x, s.loc, s.cc, s.l, s.cb]) m.delete(ino);
    s.orphans.delete(ino);
    gone(ino);
  }
  /** As lib.lua's gone. */
  function gone(ino: number): void {
    const now = Date.now();
    // Kept in the order they went: the expired ones are the first.
    s.gone.delete(ino);
    s.gone.set(ino, now);
    for (const [i, at] of s.gone) {
      if (at >= now - GONE_KEEP_MS) break;
      s.gone.delete(i);
    }
  }
  /** Whether dir is ino or lies beneath it (walking primary names up to the root). */
  function within(dir: number, ino: number): boolean {
    for (let cur: number | undefined = dir; cur !== undefined && cur !== 1 && cur !== 0; ) {
      if (cur === ino) return true;
      const p: string | undefined = s.i.get(cur)?.get("p");
      cur = p === undefined ? undefined : Number(p);
    }
    return false;
  }
  /** As lib.lua's pathof. */
  function pathOf(ino: number): string {
    const parts: string[] = [];
    for (let cur = ino; cur !== 1; ) {
      const h = s.i.get(cur);
      const p = h?.get("p"), nm = h?.get("nm");
      if (p === undefined || nm === undefined || parts.length > 4096) throw fsError("EIO", `directory ${ino} has no path to the root`);
      parts.unshift(nm);
      cur = Number(p);
    }
    return parts.length ? `/${parts.join("/")}` : "";
  }
  const alive = (id: string) => (s.hb.get(id) ?? 0) > Date.now();

  // --- the change feed (as redis/change-feed.ts publish) ---

  function emit(channel: string, msg: string): void {
    for (const h of [...(s.channels.get(channel) ?? [])]) queueMicrotask(() => h(msg));
  }
  const mine: [string, (msg: string) => void][] = [];
  function listen(channel: string, h: (msg: string) => void): void {
    made(s.channels, channel, () => new Set()).add(h);
    mine.push([channel, h]);
  }
  let subscribed = false;
  const outbox = createChangeOutbox({
    nodeId,
    waitForAcks: opts.waitForAcks,
    onSlowNodes: opts.onSlowNodes,
    peers: async () => [...s.nodes.keys()].filter((id) => id !== nodeId && alive(id)),
    listen: async () => subscribed,
    send: async (m) => emit("inval", m),
  });
  const publish = outbox.publish;

  function nodesNow(): Map<string, NodeState> {
    return new Map(
      [...s.nodes].map(([id, info]) => {
        const seen = s.seen.get(id);
        const st = seen ? (JSON.parse(seen) as { at: number } & NodeReport) : undefined;
        return [id, { ...(JSON.parse(info) as NodeInfo), alive: alive(id), lastSeen: st?.at, report: st && { cache: st.cache ?? [], ...(st.free !== undefined ? { free: st.free } : {}) } }];
      }),
    );
  }
  const holdersOf = (ino: number): Holders => parseHolders(Object.fromEntries(s.loc.get(ino) ?? []), Object.fromEntries(s.cc.get(ino) ?? []));

  async function scanRecords(onBatch: (inos: number[]) => Promise<void>, onProgress?: (seen: number, bound: number) => void): Promise<void> {
    const bound = s.next ?? 0;
    const all = [...s.i.keys()];
    for (let k = 0; k < all.length; k += BATCH) {
      const inos = all.slice(k, k + BATCH);
      await onBatch(inos);
      onProgress?.(k + inos.length, bound);
    }
  }

  function get(ino: number): Inode {
    const h = s.i.get(ino);
    if (h?.get("m") === undefined) throw fsError("ENOENT", `inode ${ino} not found`);
    return decode(ino, h);
  }

  async function create(parent: number, name: string, init: NewInode): Promise<Created> {
    const st = createStamps(init);
    const { now, changed, mtime, atime, version, gen } = st;
    needdir(parent);
    const old = s.d.get(parent)?.get(name);
    let replaced: Removed | undefined;
    const told: string[] = [];
    if (old !== undefined) {
      if (init.replace === undefined) throw fsError("EEXIST");
      const dino = entino(old);
      if (isdir(s.i.get(dino)?.get("m"))) throw fsError("EISDIR");
      // As lib.lua's create1: a sticky directory lets only a file's owner (or the directory's) take its name away (EACCES).
      const dir = s.i.get(parent)!;
      if (Number(dir.get("m")) & 0o1000 && dir.get("u") !== String(init.uid) && s.i.get(dino)?.get("u") !== String(init.uid)) throw fsError("EACCES");
      told.push(...todo(nodeId, dino, { op: "rm", path: init.replace }));
      replaced = { ino: dino, nlink: dropname(dino, parent, name, String(now)), dir: false };
    }
    let ino = init.ino;
    if (ino === undefined) {
      ino = s.next = (s.next ?? 0) + 1;
      // Behind numbers the caller has seen: the store lost writes. No number may come again.
      if (ino <= (init.above ?? 0)) {
        ino = s.next = (init.above ?? 0) + 1_000_000;
        wentBack = true;
      }
    }
    let mode = init.mode;
    const dir = (mode & S_IFMT) === S_IFDIR;
    const p = s.i.get(parent)!;
    let gid = init.gid;
    if (Number(p.get("m")) & S_ISGID) {
      gid = Number(p.get("g"));
      if (dir) mode |= S_ISGID;
    }
    const h = hashOf(s.i, ino);
    const fields = { m: mode, u: init.uid, g: gid, r: init.rdev ?? 0, s: init.size ?? 0, n: dir ? 2 : 1, a: atime, t: mtime, c: changed, v: version, p: parent, nm: name, gn: gen };
    for (const [k, v] of Object.entries(fields)) h.set(k, String(v));
    if (init.target !== undefined && init.target !== "") h.set("l", init.target);
    hashOf(s.d, parent).set(name, `${ino}:${mode >> 12}`);
    if (dir) incr(parent, 1);
    touch(parent, String(now));
    if (init.holder) hashOf(s.loc, ino).set(init.holder, String(version));
    if (ino > handedOut) handedOut = ino;
    const watchers = newname(parent);
    const sent = publish(createdChange(parent, name, ino, replaced, told, { ctime: p.get("c")!, nlink: Number(p.get("n")) }), false, watchers);
    if (watchers.length) await sent;
    return createdRecord(parent, name, init, st, { ino, mode, gid }, replaced);
  }

  return {
    async init(rootMode, uid, gid) {
      if (s.i.get(1)?.has("m")) return;
      const now = nowNs().toString();
      const h = hashOf(s.i, 1);
      for (const [k, v] of Object.entries({ m: S_IFDIR | (rootMode & 0o7777), u: uid, g: gid, r: 0, s: 0, n: 2, a: now, t: now, c: now, v: 1, p: 0, nm: "" })) h.set(k, String(v));
      s.next ??= 1;
    },
    get: async (ino) => get(ino),
    async getMany(inos) {
      return inos.map((i) => (s.i.get(i)?.has("m") ? decode(i, s.i.get(i)!) : undefined));
    },
    async lookup(parent, name) {
      const e = s.d.get(parent)?.get(name);
      if (e === undefined) throw fsError("ENOENT");
      return get(entino(e));
    },
    create,
    async createMany(creates) {
      // Each made at once, in order (as one script would), before any waits for its watchers.
      return Promise.all(creates.map((c) => create(c.parent, c.name, c.init).catch((e: unknown) => e as Error)));
    },
    async reserveInodes(count) {
      const end = (s.next = (s.next ?? 0) + count);
      if (end > handedOut) handedOut = end;
      return end - count + 1;
    },
    async inodeCounter() {
      const r = { counter: s.next ?? 0, handedOut, wentBack };
      wentBack = false;
      return r;
    },
    async instanceId() {
      return s.runId;
    },
    async raiseInodeCounter(n) {
      if ((s.next ?? 0) < n) s.next = n;
    },
    async link(ino, np, nn) {
      const now = String(nowNs());
      const h = s.i.get(ino);
      const m = h?.get("m");
      if (h === undefined || m === undefined) throw fsError("ENOENT");
      if (isdir(m)) throw fsError("EPERM", "cannot hard-link a directory");
      needdir(np);
      if (s.d.get(np)?.has(nn)) throw fsError("EEXIST");
      const from = pathOf(ino), to = `${pathOf(np)}/${nn}`;
      incr(ino, 1);
      h.set("c", now);
      s.orphans.delete(ino);
      made(s.l, ino, () => new Set()).add(`${np}/${nn}`);
      hashOf(s.d, np).set(nn, `${ino}:${Number(m) >> 12}`);
      touch(np, now);
      const told = todo(nodeId, ino, { op: "link", from, to });
      const record = decode(ino, h);
      await publish({ added: [[np, nn, ino]], inodes: [ino, np], todo: told }, true, newname(np));
      return { record, from, to };
    },
    async takeWriteLease(ino, node, ttlMs) {
      const cur = s.w.get(ino);
      if (cur && cur.until > Date.now() && cur.node !== node) return false;
      s.w.set(ino, { node, until: Date.now() + ttlMs });
      return true;
    },
    async releaseWriteLease(ino, node) {
      const cur = s.w.get(ino);
      if (cur && cur.until > Date.now() && cur.node === node) s.w.delete(ino);
    },
    async extraNames(ino) {
      return [...(s.l.get(ino) ?? [])].map((e) => {
        const slash = e.indexOf("/");
        return { parent: Number(e.slice(0, slash)), name: e.slice(slash + 1) };
      });
    },
    async remove(parent, name, wantDir, by, only) {
      const now = String(nowNs());
      const e = s.d.get(parent)?.get(name);
      if (e === undefined) throw fsError("ENOENT");
      const path = `${pathOf(parent)}/${name}`;
      const ino = entino(e);
      if (only && (ino !== only.ino || s.i.get(ino)?.get("v") !== String(only.version))) throw fsError("ESTALE", "the name names another file, or another version of it, now");
      const m = s.i.get(ino)?.get("m");
      const dir = isdir(m);
      if (wantDir && !dir) throw fsError("ENOTDIR");
      if (!wantDir && dir) throw fsError("EISDIR");
      if (dir && (s.d.get(ino)?.size ?? 0) > 0) throw fsError("ENOTEMPTY");
      sticky(parent, ino, by);
      s.d.get(parent)!.delete(name);
      touch(parent, now);
      let r: Removed, told: string[];
      if (dir) {
        incr(parent, -1);
        dropdir(ino);
        told = todo("", undefined, { op: "rmdir", path });
        r = { ino, nlink: 0, dir: true };
      } else {
        told = todo(nodeId, ino, { op: "rm", path });
        const held = s.loc.get(ino)?.get(nodeId);
        const behind = (s.todo.get(nodeId)?.length ?? 0) > 0 ? { behind: true } : {};
        r = { ino, nlink: m === undefined ? 0 : dropname(ino, parent, name, now), dir: false, ...(held ? { held: Number(held) } : {}), ...behind };
      }
      await publish({ removed: [[parent, name]], inodes: [parent, ino], todo: told }, true);
      return { ...r, path, ...(told.includes(nodeId) ? { queued: true } : {}) };
    },
    async rename(parent, name, np, nn, flags, by) {
      const now = String(nowNs());
      const se = s.d.get(parent)?.get(name);
      if (se === undefined) throw fsError("ENOENT");
      needdir(np);
      const from = `${pathOf(parent)}/${name}`, to = `${pathOf(np)}/${nn}`;
      const sino = entino(se);
      const sdir = isdir(s.i.get(sino)?.get("m"));
      if (sdir && np !== parent && within(np, sino)) throw fsError("EINVAL", "cannot move a directory into itself");
      const de = s.d.get(np)?.get(nn);
      if (flags === 1 && de !== undefined) throw fsError("EEXIST");
      if (flags === 2 && de === undefined) throw fsError("ENOENT");
      if (de === undefined || entino(de) !== sino) sticky(parent, sino, by);
      const told: string[] = [];
      const moved = (r: Renamed, exchanged?: number, same = false) => {
        const inodes = [parent, np, r.ino, ...(r.replaced ? [r.replaced.ino] : []), ...(exchanged ? [exchanged] : [])];
        const added: Invalidation["added"] = exchanged ? [[parent, name, exchanged], [np, nn, r.ino]] : [[np, nn, r.ino]];
        // As rename.lua: a rename of a name onto itself adds none.
        const watchers = same ? [] : [...newname(np), ...(exchanged && np !== parent ? newname(parent) : [])];
        return publish({ removed: [[parent, name], [np, nn]], added, inodes, todo: told }, true, watchers).then(() => (same ? r : { ...r, from, to, ...(told.includes(nodeId) ? { queued: true } : {}) }));
      };
      let replaced: Removed | undefined;
      if (de !== undefined) {
        const dino = entino(de);
        if (dino === sino) return moved({ ino: sino }, undefined, true);
        sticky(np, dino, by);
        const ddir = isdir(s.i.get(dino)?.get("m"));
        if (flags === 2) {
          // The target moves too: into parent, which must not lie beneath it.
          if (ddir && np !== parent && within(parent, dino)) throw fsError("EINVAL", "cannot move a directory into itself");
          s.d.get(parent)!.set(name, de);
          s.d.get(np)!.set(nn, se);
          setname(sino, parent, name, np, nn);
          setname(dino, np, nn, parent, name);
          if (sdir !== ddir && parent !== np) {
            const [a, b] = ddir ? [np, parent] : [parent, np];
            incr(a, -1);
            incr(b, 1);
          }
          touch(parent, now);
          touch(np, now);
          hashOf(s.i, sino).set("c", now);
          hashOf(s.i, dino).set("c", now);
          // Once per node: a node holding both files swaps them once (twice would swap them back).
          told.push(...todo("", sdir || ddir ? undefined : [sino, dino], { op: "swap", from, to }));
          return moved({ ino: sino, exchanged: dino }, dino);
        }
        if (sdir && !ddir) throw fsError("ENOTDIR");
        if (ddir && !sdir) throw fsError("EISDIR");
        if (ddir) {
          if ((s.d.get(dino)?.size ?? 0) > 0) throw fsError("ENOTEMPTY");
          dropdir(dino);
          incr(np, -1);
          replaced = { ino: dino, nlink: 0, dir: true };
        } else {
          told.push(...todo("", dino, { op: "rm", path: to }));
          const held = s.loc.get(dino)?.get(nodeId);
          replaced = { ino: dino, nlink: dropname(dino, np, nn, now), dir: false, ...(held !== undefined ? { held: Number(held) } : {}) };
        }
      }
      s.d.get(parent)!.delete(name);
      hashOf(s.d, np).set(nn, se);
      setname(sino, parent, name, np, nn);
      if (sdir && parent !== np) {
        incr(parent, -1);
        incr(np, 1);
      }
      touch(parent, now);
      if (np !== parent) touch(np, now);
      hashOf(s.i, sino).set("c", now);
      // The origin too (see rename.lua).
      told.push(...todo("", sdir ? undefined : sino, { op: "mv", from, to }));
      return moved(replaced ? { ino: sino, replaced } : { ino: sino });
    },
    async setAttrs(ino, ch) {
      const h = s.i.get(ino);
      if (h === undefined) throw fsError("ENOENT");
      h.set("c", String(nowNs()));
      for (const [k, v] of [["m", ch.mode], ["u", ch.uid], ["g", ch.gid], ["a", ch.atime], ["t", ch.mtime]] as const) if (v !== undefined) h.set(k, String(v));
      const r = decode(ino, h);
      await publish({ inodes: [ino] }, true);
      return r;
    },
    async setData(ino, size, mtime, ctime, holder, path, opts = {}) {
      const version = opts.version ?? newVersion();
      const h = s.i.get(ino);
      if (h === undefined) throw fsError("ENOENT");
      for (const [k, v] of [["s", size], ["t", mtime], ["c", ctime], ["v", version]] as const) h.set(k, String(v));
      const told = todo(holder, ino, { op: "drop", path, ino });
      s.loc.delete(ino);
      s.cc.delete(ino);
      if (holder !== "") hashOf(s.loc, ino).set(holder, String(version));
      const watchers = [...(s.cb.get(ino) ?? [])].filter((n) => n !== nodeId);
      s.cb.delete(ino);
      const r = decode(ino, h);
      const sent = publish({ inodes: [ino], data: [ino], todo: told }, opts.acked, watchers);
      if (opts.acked || watchers.length) await sent;
      return r;
    },
    async purge(ino) {
      if (Number(s.i.get(ino)?.get("n") ?? 0) > 0) return;
      dropRecord(ino);
    },
    async deleted(inos) {
      return inos.map((i) => s.gone.has(i));
    },
    async listDir(ino, watch = false) {
      if (s.i.get(ino)?.get("m") === undefined) throw fsError("ENOENT");
      if (watch) made(s.dw, ino, () => new Set()).add(nodeId);
      const out: DirListing[] = [];
      for (const [name, v] of s.d.get(ino) ?? []) out.push({ name, ino: entino(v), type: Number(v.slice(v.indexOf(":") + 1)) });
      return out;
    },
    async getXattr(ino, name) {
      const v = s.x.get(ino)?.get(name);
      return v === undefined ? undefined : new Uint8Array(v);
    },
    async setXattr(ino, name, value, flags) {
      const h = s.i.get(ino);
      if (h === undefined) throw fsError("ENOENT");
      const x = made(s.x, ino, () => new Map());
      if (flags === 1 && x.has(name)) throw fsError("EEXIST");
      if (flags === 2 && !x.has(name)) throw fsError("ENODATA");
      let total = Buffer.byteLength(name) + 1 + value.length;
      for (const [n, v] of x) if (n !== name) total += Buffer.byteLength(n) + 1 + v.length;
      if (total > XATTRS_MAX) throw fsError("ENOSPC");
      x.set(name, new Uint8Array(value));
      h.set("c", String(nowNs()));
      publish({ inodes: [ino] });
    },
    async listXattr(ino) {
      return [...(s.x.get(ino)?.keys() ?? [])];
    },
    async removeXattr(ino, name) {
      const h = s.i.get(ino);
      if (h === undefined) throw fsError("ENOENT");
      const x = s.x.get(ino);
      if (!x?.delete(name)) throw fsError("ENODATA");
      if (x.size === 0) s.x.delete(ino);
      h.set("c", String(nowNs()));
      publish({ inodes: [ino] });
    },
    // resync is never called: a memory channel cannot drop messages.
    async subscribe(onChanges) {
      subscribed = true;
      listen("inval", (msg) => {
        const m = JSON.parse(msg) as FeedMessage;
        if (m.origin === nodeId) return;
        const ack = m.ack ? () => emit(`ack:${m.origin}`, `${nodeId} ${m.seq}`) : undefined;
        onChanges(m.changes, ack, outbox.waiting(), awaits(m, nodeId));
      });
      listen(`ack:${nodeId}`, outbox.acked);
    },
    todoWaiting: async () => (s.todo.get(nodeId)?.length ?? 0) > 0,
    async takeTodo() {
      const items = s.todo.get(nodeId) ?? [];
      s.todo.delete(nodeId);
      return items.map((i) => JSON.parse(i) as TodoEntry);
    },
    async locations(ino) {
      return new Map([...(s.loc.get(ino) ?? [])].map(([k, v]) => [k, Number(v)]));
    },
    holders: async (ino) => holdersOf(ino),
    async recordAndHolders(ino, watch = false) {
      const r = get(ino);
      if (watch) made(s.cb, ino, () => new Set()).add(nodeId);
      return { r, holders: holdersOf(ino) };
    },
    // In one process every message is heard in order, before anything that follows it.
    watchesHold: () => subscribed && [...s.nodes].every(([id, info]) => id === nodeId || !alive(id) || (JSON.parse(info) as NodeInfo).watches === true),
    recordsAndHolders: async (inos, watch = false) =>
      inos.map((ino) => {
        if (s.i.get(ino)?.get("m") === undefined) return undefined;
        if (watch) made(s.cb, ino, () => new Set()).add(nodeId);
        return { r: get(ino), holders: holdersOf(ino) };
      }),
    async heldBy(node, copies) {
      return copies.map((c) => s.loc.get(c.ino)?.get(node) === String(c.version));
    },
    async addCachedCopies(node, startedAt, copies) {
      let n = 0;
      for (const c of copies) {
        if (s.i.get(c.ino)?.get("v") !== String(c.version)) continue;
        hashOf(s.cc, c.ino).set(node, `${c.version} ${startedAt}`);
        n++;
      }
      return n;
    },
    async dropCachedCopy(ino, node, version) {
      const cc = s.cc.get(ino);
      if (cc?.get(node)?.split(" ")[0] !== String(version)) return;
      cc.delete(node);
      if (cc.size === 0) s.cc.delete(ino);
    },
    nodes: async () => nodesNow(),
    async registerNode(node, ttlMs) {
      const prev = { node: s.nodes.get(node.id), seen: s.seen.get(node.id) };
      s.nodes.set(node.id, JSON.stringify(node));
      s.hb.set(node.id, Date.now() + ttlMs);
      s.seen.set(node.id, JSON.stringify({ at: Date.now(), cache: [] }));
      return prev;
    },
    async setting(name) {
      return s.settings.get(name);
    },
    async setSetting(name, value) {
      s.settings.set(name, value);
    },
    async queueCopy(node, order) {
      made(s.copies, node, () => []).push(JSON.stringify(order));
    },
    async nextCopies(node, max) {
      return (s.copies.get(node) ?? []).slice(0, max).map((x) => JSON.parse(x) as CopyOrder);
    },
    async copyDone(node, order) {
      const l = s.copies.get(node) ?? [];
      const at = l.indexOf(JSON.stringify(order));
      if (at >= 0) l.splice(at, 1);
      if (!l.length) s.copies.delete(node);
    },
    async copyOrders() {
      return new Map([...s.copies].filter(([, l]) => l.length > 0).map(([n, l]) => [n, l.map((x) => JSON.parse(x) as CopyOrder)]));
    },
    async addHolder(ino, node, version) {
      if (s.i.get(ino)?.get("v") !== String(version)) return false;
      hashOf(s.loc, ino).set(node, String(version));
      return true;
    },
    async takeRepairLease(node, ttlMs) {
      const now = Date.now();
      if (s.repair && s.repair.until > now && s.repair.node !== node) return false;
      s.repair = { node, until: now + ttlMs };
      return true;
    },
    async withdrawNode(id, previous) {
      s.hb.delete(id);
      if (previous.node === undefined) s.nodes.delete(id);
      else s.nodes.set(id, previous.node);
      if (previous.seen === undefined) s.seen.delete(id);
      else s.seen.set(id, previous.seen);
    },
    async heartbeat(id, ttlMs, report) {
      const now = Date.now();
      s.hb.set(id, now + ttlMs);
      s.seen.set(id, JSON.stringify({ at: now, cache: report?.cache ?? [], ...(report?.free !== undefined ? { free: report.free } : {}) }));
    },
    async forgetNode(id, onProgress) {
      const bound = s.next ?? 0;
      let seen = 0, held = 0;
      /** Files whose root-path holders it was the last of: they may still have a cached copy. */
      const bare: number[] = [];
      const keys = [...[...s.loc.keys()].map((ino) => ["loc", ino] as const), ...[...s.cc.keys()].map((ino) => ["cc", ino] as const)];
      for (const [kind, ino] of keys) {
        const h = s[kind].get(ino);
        if (h?.delete(id) && kind === "loc") {
          held++;
          if (h.size === 0) bare.push(ino);
        }
        if (h?.size === 0) s[kind].delete(ino);
        if (++seen % BATCH === 0 || seen === keys.length) onProgress?.(seen, bound);
      }
      for (const m of [s.nodes, s.seen, s.todo, s.copies, s.hb]) m.delete(id);
      const known = nodesNow();
      const orphaned = bare.filter((ino) => ![...holdersOf(ino).cached].some(([n, c]) => String(c.version) === s.i.get(ino)?.get("v") && known.get(n)?.startedAt === c.startedAt)).length;
      return { held, orphaned };
    },
    async scanFiles(onBatch, onProgress) {
      await scanRecords(async (all) => {
        const files = all.flatMap((ino) => {
          const h = s.i.get(ino);
          const m = h?.get("m");
          if (!h || m === undefined || (Number(m) & S_IFMT) !== S_IFREG) return [];
          return [{ ino, size: Number(h.get("s") ?? 0), version: Number(h.get("v") ?? 0), parent: Number(h.get("p") ?? 0), holders: holdersOf(ino) }];
        });
        onBatch(files);
      }, onProgress);
    },
    async scanInodes(onBatch, onProgress) {
      await scanRecords(async (all) => {
        const out: ScannedInode[] = [];
        for (const ino of all) {
          const h = s.i.get(ino);
          const m = h?.get("m");
          if (!h || m === undefined) continue;
          const mode = Number(m);
          const r: ScannedInode = { ino, mode, size: Number(h.get("s") ?? 0), nlink: Number(h.get("n") ?? 1), version: Number(h.get("v") ?? 1), parent: Number(h.get("p") ?? 0), name: h.get("nm") ?? "" };
          if ((mode & S_IFMT) === S_IFREG) r.holders = holdersOf(ino);
          if ((mode & S_IFMT) === S_IFDIR) r.entries = [...(s.d.get(ino) ?? [])].map(([name, v]) => ({ name, ino: entino(v), type: Number(v.slice(v.indexOf(":") + 1)) }));
          out.push(r);
        }
        onBatch(out);
      }, onProgress);
    },
    async orphans() {
      return [...s.orphans];
    },
    async dropHolder(ino, node, version, why) {
      const loc = s.loc.get(ino);
      if (loc?.get(node) !== String(version)) return false;
      if (why === "stale" && s.i.get(ino)?.get("v") === String(version)) return false;
      if (why === "unknown" && s.nodes.has(node)) return false;
      loc.delete(node);
      if (loc.size === 0) s.loc.delete(ino);
      return true;
    },
    async dropDanglingEntry(parent, name, ino) {
      const e = s.d.get(parent)?.get(name);
      if (e === undefined || entino(e) !== ino || s.i.has(ino)) return false;
      s.d.get(parent)!.delete(name);
      if (e.endsWith(":4") && s.i.has(parent)) incr(parent, -1);
      // Kernels that cached the name must forget it.
      publish({ removed: [[parent, name]], inodes: [parent] });
      return true;
    },
    async settleOrphan(ino) {
      const n = s.i.get(ino)?.get("n");
      if (n !== undefined && Number(n) > 0) {
        s.orphans.delete(ino);
        return "unlisted";
      }
      // Open files are not recorded in the store: an unlinked inode is purged only when no node is live.
      if (n !== undefined && [...s.nodes.keys()].some(alive)) return "kept";
      dropRecord(ino);
      return "purged";
    },
    async unregisterNode(id) {
      s.hb.delete(id);
    },
    async close() {
      outbox.flush();
      for (const [channel, h] of mine.splice(0)) s.channels.get(channel)?.delete(h);
      subscribed = false;
    },
  };
}
