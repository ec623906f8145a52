/**
 * MetadataStore on Redis.
 *
 * Key map (P = key prefix, default "mcfs:"):
 *
 * | key               | type   | holds                                                                 |
 * |-------------------|--------|-----------------------------------------------------------------------|
 * | P next            | string | last inode number handed out (INCR); root is 1                        |
 * | P i:{ino}         | hash   | m mode, u uid, g gid, r rdev, s size, n nlink, a/t/c atime/mtime/ctime |
 * |                   |        | (ns since epoch, decimal strings), v data version, p parent ino,      |
 * |                   |        | nm primary name, l symlink target                                      |
 * | P d:{ino}         | hash   | directory entries: name -> "{child ino}:{mode >> 12}"                 |
 * | P l:{ino}         | set    | extra hard-link names of a file: "{parent ino}/{name}"                |
 * | P x:{ino}         | hash   | extended attributes: name -> value (binary)                           |
 * | P loc:{ino}       | hash   | nodes holding the bytes in their root path: node id -> data version   |
 * | P cc:{ino}        | hash   | nodes holding a cached copy: node id -> "{version} {startedAt}" (the  |
 * |                   |        | run that cached it: a restarted node's cache is gone)                 |
 * | P orphans         | set    | inodes with no names left, kept while some node has them open         |
 * | P nodes           | hash   | every node that ever joined: id -> JSON {id, address, startedAt}      |
 * | P hb:{node}       | string | heartbeat, expires when the node stops beating                         |
 * | P seen            | hash   | node id -> JSON {at, cache}: its last heartbeat and what it reported  |
 * | P inval           | pubsub | JSON {origin, seq, ack, changes: Invalidation[]}: other nodes drop   |
 * |                   |        | their caches; with ack they answer on P ack:{origin} once done        |
 * | P ack:{node}      | pubsub | "{node} {seq}": that node has applied message seq of this node       |
 * | P w:{ino}         | string | node writing ino's bytes now (a lease, expires): writers take turns    |
 * | P todo:{node}     | list   | JSON changes of local files a node must still make (rm, rmdir, mv,    |
 * |                   |        | swap of namespace paths), queued by whoever renamed or deleted them   |
 *
 * Nothing else is kept: `mcfs fsck` reports (and with --repair removes) holder entries of versions
 * other than the record's or of nodes not in P nodes, d: entries naming inodes without a record,
 * records no entry names that are not in P orphans, and P orphans members with links or no record.
 *
 * Namespace changes run as Lua scripts, so each is atomic against every other node. Scripts build keys
 * from the prefix themselves (single Redis or a primary with replicas; not Redis Cluster).
 * Errors from scripts are errno names ("ENOENT ..."), mapped by toErrno.
 */
import { commandOptions } from "redis";
import { connectRedis, type RedisAccess } from "./redis-connect.ts";
import { newGeneration, newVersion, type AttrChange, type DirListing, type Holders, type NodeReport, type NodeState, type Inode, type Invalidation, type MetadataStore, type NewInode, type NodeInfo, type Removed, type Renamed, type ScannedInode, type TodoEntry } from "./store.ts";
import { E, FsError, fsError } from "../util/errno.ts";
import { nowNs } from "../util/time.ts";

/** Moved to src/util/time.ts; re-exported until no caller imports it from here. */
export { nowNs };

const S_IFMT = 0o170000, S_IFDIR = 0o040000, S_IFREG = 0o100000;
/** Longest a rename or unlink waits for the other nodes to acknowledge it (a node that hangs). */
const ACK_WAIT_MS = 500;

const LIB = `
local P = ARGV[1]
local function isdir(m) return m and bit.band(tonumber(m), 61440) == 16384 end
local function entino(e) return string.match(e, '^(%d+)') end
local function needdir(ino)
  local m = redis.call('HGET', P..'i:'..ino, 'm')
  if not m then return redis.error_reply('ENOENT directory '..ino..' is gone') end
  if not isdir(m) then return redis.error_reply('ENOTDIR') end
  return nil
end
local function touch(ino, now) redis.call('HSET', P..'i:'..ino, 't', now, 'c', now) end
-- move one name of ino from (op, on) to (np, nn): the primary name lives in the inode, others in l:
local function setname(ino, op, on, np, nn)
  local k = P..'i:'..ino
  local r = redis.call('HMGET', k, 'p', 'nm')
  if r[1] == op and r[2] == on then
    redis.call('HSET', k, 'p', np, 'nm', nn)
  else
    redis.call('SREM', P..'l:'..ino, op..'/'..on)
    redis.call('SADD', P..'l:'..ino, np..'/'..nn)
  end
end
-- drop one name of a file; returns links left
local function dropname(ino, parent, name, now)
  local k = P..'i:'..ino
  local n = redis.call('HINCRBY', k, 'n', -1)
  redis.call('HSET', k, 'c', now)
  local r = redis.call('HMGET', k, 'p', 'nm')
  if r[1] == parent and r[2] == name then
    local alt = redis.call('SPOP', P..'l:'..ino)
    if alt then
      local pp, nn = string.match(alt, '^(%d+)/(.*)$')
      redis.call('HSET', k, 'p', pp, 'nm', nn)
    end
  else
    redis.call('SREM', P..'l:'..ino, parent..'/'..name)
  end
  if n <= 0 then redis.call('SADD', P..'orphans', ino) end
  return n
end
-- Queue a change of local files for the other nodes that hold ino's bytes, or for every other node
-- when ino is nil (a directory: any node may hold files under it). Returns the nodes told.
-- ino: the inode whose holders must make the change, or several (each holder told once), or nil (every node)
local function todo(origin, ino, entry)
  local nodes
  if type(ino) == 'table' then
    local seen = {}
    nodes = {}
    for _, i in ipairs(ino) do
      for _, n in ipairs(redis.call('HKEYS', P..'loc:'..i)) do
        if not seen[n] then seen[n] = true nodes[#nodes + 1] = n end
      end
    end
  elseif ino then
    nodes = redis.call('HKEYS', P..'loc:'..ino)
    -- Which file the change is for: a local file marked as another inode's is left alone.
    if entry.op ~= 'swap' then entry.id = ino..':'..(redis.call('HGET', P..'i:'..ino, 'gn') or '') end
    -- The last name going (asked before it is dropped): a holder may keep the bytes a while for
    -- readers elsewhere that have the file open.
    if entry.op == 'rm' then entry.last = tonumber(redis.call('HGET', P..'i:'..ino, 'n') or '1') <= 1 end
  else
    nodes = redis.call('HKEYS', P..'nodes')
  end
  local told = {}
  for _, n in ipairs(nodes) do
    if n ~= origin then
      -- A string: cjson would print a 64-bit version number to 14 digits.
      if entry.op == 'rm' and type(ino) ~= 'table' and ino then entry.v = redis.call('HGET', P..'loc:'..ino, n) or nil end
      redis.call('RPUSH', P..'todo:'..n, cjson.encode(entry))
      told[#told + 1] = n
    end
  end
  return told
end
local function dropdir(ino)
  redis.call('DEL', P..'i:'..ino, P..'d:'..ino, P..'x:'..ino, P..'loc:'..ino, P..'cc:'..ino, P..'l:'..ino)
end
`;

export function parseHolders(data: Record<string, string>, cached: Record<string, string>): Holders {
  return {
    data: new Map(Object.entries(data).map(([k, v]) => [k, Number(v)])),
    cached: new Map(
      Object.entries(cached).map(([k, v]) => {
        const [version, startedAt] = v.split(" ").map(Number);
        return [k, { version: version ?? 0, startedAt: startedAt ?? 0 }];
      }),
    ),
  };
}

const SCRIPTS = {
  // ARGV: P parent name mode uid gid rdev size atime mtime now target holder ino|'' version above gen
  //   -> {ino, mode, gid, counter raised (0/1)}
  // ino: taken from a block this node reserved (reserveInodes) instead of the counter.
  // A set-group-ID directory gives new entries its group, and new directories its set-group-ID bit.
  create: `
local parent, name = ARGV[2], ARGV[3]
local e = needdir(parent) if e then return e end
local dk = P..'d:'..parent
if redis.call('HEXISTS', dk, name) == 1 then return redis.error_reply('EEXIST') end
local ino = ARGV[14]
local raised = 0
if not ino or ino == '' then
  ino = redis.call('INCR', P..'next')
  -- Behind numbers the caller has seen: Redis lost writes. No number may come again.
  if ino <= tonumber(ARGV[16]) then
    ino = tonumber(ARGV[16]) + 1000000
    redis.call('SET', P..'next', ino)
    raised = 1
  end
end
local mode = tonumber(ARGV[4])
local gid = ARGV[6]
local dir = bit.band(mode, 61440) == 16384
local pk = P..'i:'..parent
local pr = redis.call('HMGET', pk, 'm', 'g')
if bit.band(tonumber(pr[1]), 1024) ~= 0 then
  gid = pr[2]
  if dir then mode = bit.bor(mode, 1024) end
end
local k = P..'i:'..ino
redis.call('HSET', k, 'm', mode, 'u', ARGV[5], 'g', gid, 'r', ARGV[7], 's', ARGV[8], 'n', dir and 2 or 1,
  'a', ARGV[9], 't', ARGV[10], 'c', ARGV[11], 'v', ARGV[15], 'p', parent, 'nm', name, 'gn', ARGV[17])
if ARGV[12] ~= '' then redis.call('HSET', k, 'l', ARGV[12]) end
redis.call('HSET', dk, name, ino..':'..bit.rshift(mode, 12))
if dir then redis.call('HINCRBY', pk, 'n', 1) end
touch(parent, ARGV[11])
if ARGV[13] ~= '' then redis.call('HSET', P..'loc:'..ino, ARGV[13], ARGV[15]) end
return {tonumber(ino), mode, tonumber(gid), raised}`,
  // ARGV: P parent name -> {ino, fields...}
  lookup: `
local e = redis.call('HGET', P..'d:'..ARGV[2], ARGV[3])
if not e then return redis.error_reply('ENOENT') end
local ino = entino(e)
local r = redis.call('HGETALL', P..'i:'..ino)
table.insert(r, 1, ino)
return r`,
  // ARGV: P ino newparent newname now
  // ARGV: P ino newparent newname now origin frompath topath -> record (first: {nodes told})
  link: `
local ino, np, nn, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local k = P..'i:'..ino
local m = redis.call('HGET', k, 'm')
if not m then return redis.error_reply('ENOENT') end
if isdir(m) then return redis.error_reply('EPERM cannot hard-link a directory') end
local e = needdir(np) if e then return e end
if redis.call('HEXISTS', P..'d:'..np, nn) == 1 then return redis.error_reply('EEXIST') end
redis.call('HINCRBY', k, 'n', 1)
redis.call('HSET', k, 'c', now)
redis.call('SREM', P..'orphans', ino)
redis.call('SADD', P..'l:'..ino, np..'/'..nn)
redis.call('HSET', P..'d:'..np, nn, ino..':'..bit.rshift(tonumber(m), 12))
touch(np, now)
local told = todo(ARGV[6], ino, {op = 'link', from = ARGV[7], to = ARGV[8]})
local r = redis.call('HGETALL', k)
table.insert(r, 1, ino)
table.insert(r, 1, told)
return r`,
  // ARGV: P parent name wantdir(1/0) now origin path -> {ino, nlink, dir, {nodes told}, version origin held or ''}
  remove: `
local parent, name, now, origin, path = ARGV[2], ARGV[3], ARGV[5], ARGV[6], ARGV[7]
local e = redis.call('HGET', P..'d:'..parent, name)
if not e then return redis.error_reply('ENOENT') end
local ino = entino(e)
local m = redis.call('HGET', P..'i:'..ino, 'm')
local d = isdir(m)
if ARGV[4] == '1' and not d then return redis.error_reply('ENOTDIR') end
if ARGV[4] == '0' and d then return redis.error_reply('EISDIR') end
if d and redis.call('HLEN', P..'d:'..ino) > 0 then return redis.error_reply('ENOTEMPTY') end
redis.call('HDEL', P..'d:'..parent, name)
touch(parent, now)
if d then
  redis.call('HINCRBY', P..'i:'..parent, 'n', -1)
  dropdir(ino)
  return {tonumber(ino), 0, 1, todo(origin, nil, {op = 'rmdir', path = path})}
end
local told = todo(origin, ino, {op = 'rm', path = path})
local held = redis.call('HGET', P..'loc:'..ino, origin) or ''
if not m then return {tonumber(ino), 0, 0, told, held} end
return {tonumber(ino), dropname(ino, parent, name, now), 0, told, held}`,
  // ARGV: P parent name newparent newname flags now origin frompath topath
  //   -> {ino, replacedIno, replacedNlink, replacedDir, exchangedIno, {nodes told}}
  rename: `
local parent, name, np, nn, flags, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local origin, from, to = ARGV[8], ARGV[9], ARGV[10]
local se = redis.call('HGET', P..'d:'..parent, name)
if not se then return redis.error_reply('ENOENT') end
local err = needdir(np) if err then return err end
local sino = entino(se)
local sdir = isdir(redis.call('HGET', P..'i:'..sino, 'm'))
if sdir and np ~= parent then
  local cur = np
  while cur and cur ~= '1' and cur ~= '0' do
    if cur == sino then return redis.error_reply('EINVAL cannot move a directory into itself') end
    cur = redis.call('HGET', P..'i:'..cur, 'p')
  end
end
local de = redis.call('HGET', P..'d:'..np, nn)
if flags == 1 and de then return redis.error_reply('EEXIST') end
if flags == 2 and not de then return redis.error_reply('ENOENT') end
local rino, rn, rdir, xino = 0, 0, 0, 0
local told = {}
local function tell(list) for _, n in ipairs(list) do told[#told + 1] = n end end
if de then
  local dino = entino(de)
  if dino == sino then return {tonumber(sino), 0, 0, 0, 0, {}} end
  local ddir = isdir(redis.call('HGET', P..'i:'..dino, 'm'))
  if flags == 2 then
    redis.call('HSET', P..'d:'..parent, name, de)
    redis.call('HSET', P..'d:'..np, nn, se)
    setname(sino, parent, name, np, nn)
    setname(dino, np, nn, parent, name)
    if sdir ~= ddir and parent ~= np then
      local from, to = parent, np
      if ddir then from, to = np, parent end
      redis.call('HINCRBY', P..'i:'..from, 'n', -1)
      redis.call('HINCRBY', P..'i:'..to, 'n', 1)
    end
    touch(parent, now) touch(np, now)
    redis.call('HSET', P..'i:'..sino, 'c', now)
    redis.call('HSET', P..'i:'..dino, 'c', now)
    local swap = {op = 'swap', from = from, to = to}
    -- Once per node: a node holding both files swaps them once (twice would swap them back).
    if sdir or ddir then tell(todo(origin, nil, swap)) else tell(todo(origin, {sino, dino}, swap)) end
    return {tonumber(sino), 0, 0, 0, tonumber(dino), told}
  end
  if sdir and not ddir then return redis.error_reply('ENOTDIR') end
  if ddir and not sdir then return redis.error_reply('EISDIR') end
  if ddir then
    if redis.call('HLEN', P..'d:'..dino) > 0 then return redis.error_reply('ENOTEMPTY') end
    dropdir(dino)
    redis.call('HINCRBY', P..'i:'..np, 'n', -1)
    rino, rn, rdir = tonumber(dino), 0, 1
  else
    tell(todo(origin, dino, {op = 'rm', path = to}))
    rino, rn = tonumber(dino), dropname(dino, np, nn, now)
  end
end
redis.call('HDEL', P..'d:'..parent, name)
redis.call('HSET', P..'d:'..np, nn, se)
setname(sino, parent, name, np, nn)
if sdir and parent ~= np then
  redis.call('HINCRBY', P..'i:'..parent, 'n', -1)
  redis.call('HINCRBY', P..'i:'..np, 'n', 1)
end
touch(parent, now)
if np ~= parent then touch(np, now) end
redis.call('HSET', P..'i:'..sino, 'c', now)
local mv = {op = 'mv', from = from, to = to}
if sdir then tell(todo(origin, nil, mv)) else tell(todo(origin, sino, mv)) end
return {tonumber(sino), rino, rn, rdir, xino, told}`,
  // ARGV: P ino field value ... -> record
  setattrs: `
local k = P..'i:'..ARGV[2]
if redis.call('EXISTS', k) == 0 then return redis.error_reply('ENOENT') end
local args = {}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
if #args > 0 then redis.call('HSET', k, unpack(args)) end
local r = redis.call('HGETALL', k)
table.insert(r, 1, ARGV[2])
return r`,
  // ARGV: P ino size mtime ctime holder path version -> {{nodes told}, record}
  // The other holders' copies are now stale: they are told to drop them.
  setdata: `
local ino = ARGV[2]
local k = P..'i:'..ino
if redis.call('EXISTS', k) == 0 then return redis.error_reply('ENOENT') end
local v = ARGV[8]
redis.call('HSET', k, 's', ARGV[3], 't', ARGV[4], 'c', ARGV[5], 'v', v)
local told = todo(ARGV[6], ino, {op = 'drop', path = ARGV[7], ino = tonumber(ino)})
redis.call('DEL', P..'loc:'..ino, P..'cc:'..ino)
if ARGV[6] ~= '' then redis.call('HSET', P..'loc:'..ino, ARGV[6], v) end
local r = redis.call('HGETALL', k)
table.insert(r, 1, ino)
return {told, r}`,
  // ARGV: P ino
  purge: `
local ino = ARGV[2]
local n = redis.call('HGET', P..'i:'..ino, 'n')
if n and tonumber(n) > 0 then return 0 end
redis.call('DEL', P..'i:'..ino, P..'x:'..ino, P..'loc:'..ino, P..'cc:'..ino, P..'l:'..ino)
redis.call('SREM', P..'orphans', ino)
return 1`,
  // ARGV: P node startedAt (ino version)... -> how many were listed (a version no longer current is not)
  addcached: `
local n = 0
for i = 4, #ARGV, 2 do
  if redis.call('HGET', P..'i:'..ARGV[i], 'v') == ARGV[i + 1] then
    redis.call('HSET', P..'cc:'..ARGV[i], ARGV[2], ARGV[i + 1]..' '..ARGV[3])
    n = n + 1
  end
end
return n`,
  // ARGV: P node (ino version)... -> for each, 1 when node holds that version in its root path
  heldby: `
local r = {}
for i = 3, #ARGV, 2 do r[#r + 1] = redis.call('HGET', P..'loc:'..ARGV[i], ARGV[2]) == ARGV[i + 1] and 1 or 0 end
return r`,
  // ARGV: P ino node ttl -> 1 when node has the write lease of ino now
  takelease: `
local k = P..'w:'..ARGV[2]
local cur = redis.call('GET', k)
if cur and cur ~= ARGV[3] then return 0 end
redis.call('SET', k, ARGV[3], 'PX', ARGV[4])
return 1`,
  // ARGV: P ino node
  droplease: `
local k = P..'w:'..ARGV[2]
if redis.call('GET', k) == ARGV[3] then redis.call('DEL', k) end
return 0`,
  // ARGV: P n: the inode counter becomes at least n
  raisecounter: `
local cur = tonumber(redis.call('GET', P..'next') or '0')
if cur < tonumber(ARGV[2]) then redis.call('SET', P..'next', ARGV[2]) end
return 0`,
  // ARGV: P ino node version
  dropcached: `
local e = redis.call('HGET', P..'cc:'..ARGV[2], ARGV[3])
if e and string.match(e, '^(%d+)') == ARGV[4] then redis.call('HDEL', P..'cc:'..ARGV[2], ARGV[3]) end
return 0`,
  // ARGV: P ino name value flags(1 create, 2 replace)
  setxattr: `
local k = P..'i:'..ARGV[2]
if redis.call('EXISTS', k) == 0 then return redis.error_reply('ENOENT') end
local xk = P..'x:'..ARGV[2]
local has = redis.call('HEXISTS', xk, ARGV[3]) == 1
local f = tonumber(ARGV[5])
if f == 1 and has then return redis.error_reply('EEXIST') end
if f == 2 and not has then return redis.error_reply('ENODATA') end
redis.call('HSET', xk, ARGV[3], ARGV[4])
redis.call('HSET', k, 'c', ARGV[6])
return 1`,
  // ARGV: P ino node version why(stale|unknown|absent) -> 1 when unlisted
  // stale: only while the record is at another version; unknown: only while the node is no member;
  // absent: the node (stopped, its root path checked) does not have the file.
  fsckdropholder: `
local ino, node, v, why = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HGET', P..'loc:'..ino, node) ~= v then return 0 end
if why == 'stale' and redis.call('HGET', P..'i:'..ino, 'v') == v then return 0 end
if why == 'unknown' and redis.call('HEXISTS', P..'nodes', node) == 1 then return 0 end
redis.call('HDEL', P..'loc:'..ino, node)
return 1`,
  // ARGV: P parent name ino -> 1 when removed (a directory's entry also gave its parent a link)
  fsckdropentry: `
local e = redis.call('HGET', P..'d:'..ARGV[2], ARGV[3])
if not e or entino(e) ~= ARGV[4] or redis.call('EXISTS', P..'i:'..ARGV[4]) == 1 then return 0 end
redis.call('HDEL', P..'d:'..ARGV[2], ARGV[3])
if string.match(e, ':(%d+)$') == '4' and redis.call('EXISTS', P..'i:'..ARGV[2]) == 1 then redis.call('HINCRBY', P..'i:'..ARGV[2], 'n', -1) end
return 1`,
  // ARGV: P ino -> 'unlisted' | 'purged' | 'kept'
  // Open files are not recorded in Redis: an unlinked inode is purged only when no node is live.
  fsckorphan: `
local ino = ARGV[2]
local n = redis.call('HGET', P..'i:'..ino, 'n')
if n and tonumber(n) > 0 then
  redis.call('SREM', P..'orphans', ino)
  return 'unlisted'
end
if n then
  for _, id in ipairs(redis.call('HKEYS', P..'nodes')) do
    if redis.call('EXISTS', P..'hb:'..id) == 1 then return 'kept' end
  end
end
redis.call('DEL', P..'i:'..ino, P..'x:'..ino, P..'loc:'..ino, P..'cc:'..ino, P..'l:'..ino)
redis.call('SREM', P..'orphans', ino)
return 'purged'`,
} as const;

type ScriptName = keyof typeof SCRIPTS;

export function parseRecord(ino: number, f: Record<string, string>): Inode {
  const rec: Inode = {
    ino,
    mode: Number(f.m),
    uid: Number(f.u ?? 0),
    gid: Number(f.g ?? 0),
    rdev: Number(f.r ?? 0),
    size: Number(f.s ?? 0),
    nlink: Number(f.n ?? 1),
    atime: BigInt(f.a ?? "0"),
    mtime: BigInt(f.t ?? "0"),
    ctime: BigInt(f.c ?? "0"),
    version: Number(f.v ?? 1),
    gen: f.gn ?? "",
    parent: Number(f.p ?? 0),
    name: f.nm ?? "",
  };
  if (f.l !== undefined) rec.target = f.l;
  return rec;
}

function parseFlat(r: unknown): Inode {
  const a = r as string[];
  const f: Record<string, string> = {};
  for (let i = 1; i + 1 < a.length; i += 2) f[a[i]!] = a[i + 1]!;
  if (f.m === undefined) throw fsError("ENOENT");
  return parseRecord(Number(a[0]), f);
}

export interface RedisStoreOptions {
  url: string;
  /** CA and password for the URL, when given apart from it. */
  access?: RedisAccess;
  /** This node: the origin of the changes it publishes. */
  nodeId: string;
  prefix?: string;
  /**
   * Wait for the other nodes to acknowledge renames and removals (default). Off for a client whose
   * callers need no such guarantee (the CSI controller removing a whole volume).
   */
  waitForAcks?: boolean;
  /** Called when the connection drops or comes back (for logs). */
  onConnectionEvent?: (event: "error" | "ready", detail?: string) => void;
  /** Nodes that let an acknowledgement wait run out (no longer waited for) or answered again (for logs). */
  onSlowNodes?: (event: "unresponsive" | "answering", nodes: string[]) => void;
}

export async function createRedisStore(opts: RedisStoreOptions): Promise<MetadataStore> {
  const P = opts.prefix ?? "mcfs:";
  // No offline queue: with Redis down, operations fail at once (EIO) instead of hanging the mount.
  const client = await connectRedis({ url: opts.url, ...opts.access }, opts.onConnectionEvent);

  const shas = new Map<ScriptName, string>();
  async function load(name: ScriptName): Promise<string> {
    const sha = await client.scriptLoad(LIB + SCRIPTS[name]);
    shas.set(name, sha);
    return sha;
  }
  for (const n of Object.keys(SCRIPTS) as ScriptName[]) await load(n);

  async function run(name: ScriptName, args: (string | number | bigint | Buffer)[]): Promise<unknown> {
    const argv = [P, ...args.map((a) => (Buffer.isBuffer(a) ? a : String(a)))] as string[];
    try {
      try {
        return await client.evalSha(shas.get(name)!, { arguments: argv });
      } catch (e) {
        if (!(e as Error).message?.startsWith("NOSCRIPT")) throw e;
        return await client.evalSha(await load(name), { arguments: argv });
      }
    } catch (e) {
      // Scripts refuse with an errno name: "ENOENT", "ENOTEMPTY ...", which Redis may prefix with "ERR".
      const m = /^(?:ERR )?(E[A-Z0-9]+)\b ?(.*)$/.exec((e as Error).message ?? "");
      if (m && m[1]! in E) throw new FsError(E[m[1]!] as number, m[2] || m[1]);
      throw e;
    }
  }

  const ik = (ino: number) => `${P}i:${ino}`;
  /** Highest inode number this client was handed (creates, reserved blocks). */
  let handedOut = 0;
  /** A create found the counter behind numbers already seen (reported once by inodeCounter). */
  let wentBack = false;

  /**
   * Tell other nodes what changed. Sent behind the change on the same connection, before the caller
   * hears the change is done; changes completed together (one batch of Redis replies) go as one
   * message, in order, so a burst costs the other nodes one message, not thousands.
   * With wait, the promise resolves once every live node has acknowledged the message (its kernel
   * has dropped what it cached), or after ACK_WAIT_MS: a rename or unlink is then visible everywhere
   * when it returns. Otherwise it resolves at once.
   */
  let outbox: Invalidation[] = [];
  let outboxWaits = false;
  let outboxDone: Promise<void> | undefined;
  let seq = 0;
  const awaitingAcks = new Map<number, { need: Set<string>; done: () => void }>();
  /**
   * Nodes that let a wait run out: not waited for by any later change until they answer again (a
   * stopped node would otherwise cost every rename and unlink on every node the full wait).
   */
  const unresponsive = new Set<string>();
  let peers: { at: number; ids: Promise<string[]> } | undefined;
  let refreshing = false;
  /** Live nodes other than this one; refreshed in the background once a second, never waited for after the first time. */
  function livePeers(): Promise<string[]> {
    const load = () => nodesNow().then((all) => [...all.values()].filter((n) => n.alive && n.id !== opts.nodeId).map((n) => n.id), () => []);
    if (!peers) peers = { at: Date.now(), ids: load() };
    else if (Date.now() - peers.at > 1000 && !refreshing) {
      refreshing = true;
      void load().then((ids) => {
        peers = { at: Date.now(), ids: Promise.resolve(ids) };
        refreshing = false;
      });
    }
    return peers.ids;
  }
  function publish(ch: Partial<Omit<Invalidation, "origin">>, wait = false): Promise<void> {
    const inv: Invalidation = { origin: opts.nodeId, added: ch.added ?? [], removed: ch.removed ?? [], inodes: ch.inodes ?? [], data: ch.data ?? [], todo: ch.todo ?? [] };
    wait &&= opts.waitForAcks !== false;
    outboxWaits ||= wait;
    if (outbox.push(inv) > 1) return wait ? outboxDone! : Promise.resolve();
    let settle!: () => void;
    outboxDone = new Promise<void>((res) => (settle = res));
    const done = outboxDone;
    queueMicrotask(() => {
      const batch = outbox;
      const ack = outboxWaits;
      outbox = [];
      outboxWaits = false;
      const s = ++seq;
      const send = () => void client.publish(`${P}inval`, JSON.stringify({ origin: opts.nodeId, seq: s, ack, changes: batch })).catch(() => {});
      if (!ack) {
        send();
        return settle();
      }
      // The waiter is registered before the message goes out: an ack can never come before it.
      void livePeers().then((all) => {
        const ids = all.filter((id) => !unresponsive.has(id));
        if (!ids.length || !subscriber) {
          send();
          return settle();
        }
        const need = new Set(ids);
        const finish = () => {
          clearTimeout(timer);
          awaitingAcks.delete(s);
          settle();
        };
        const timer = setTimeout(() => {
          for (const id of need) unresponsive.add(id);
          opts.onSlowNodes?.("unresponsive", [...need]);
          finish();
        }, ACK_WAIT_MS);
        awaitingAcks.set(s, { need, done: finish });
        send();
      });
    });
    return wait ? done : Promise.resolve();
  }
  let subscriber: ReturnType<typeof client.duplicate> | undefined;

  async function nodesNow(): Promise<Map<string, NodeState>> {
    const [all, seen] = await Promise.all([client.hGetAll(`${P}nodes`), client.hGetAll(`${P}seen`)]);
    const ids = Object.keys(all);
    const alive = await Promise.all(ids.map((id) => client.exists(`${P}hb:${id}`)));
    return new Map(
      ids.map((id, i) => {
        const s = seen[id] ? (JSON.parse(seen[id]) as { at: number } & NodeReport) : undefined;
        return [id, { ...(JSON.parse(all[id]!) as NodeInfo), alive: alive[i] === 1, lastSeen: s?.at, report: s && { cache: s.cache ?? [] } }];
      }),
    );
  }

  /** Pipelined, not one transaction per inode: a snapshot of each is enough for choosing holders. */
  async function holdersMany(inos: number[]): Promise<Holders[]> {
    const all = await Promise.all(inos.flatMap((i) => [client.hGetAll(`${P}loc:${i}`), client.hGetAll(`${P}cc:${i}`)]));
    return inos.map((_, i) => parseHolders(all[2 * i]!, all[2 * i + 1]!));
  }

  /**
   * Every inode record's number, in batches of up to 1000 (SCAN: records made or removed meanwhile
   * may or may not be seen); progress: inodes seen, and the counter as an upper bound.
   */
  async function scanRecords(onBatch: (inos: number[]) => Promise<void>, onProgress?: (seen: number, bound: number) => void): Promise<void> {
    const bound = Number((await client.get(`${P}next`)) ?? 0);
    const prefix = `${P}i:`;
    let seen = 0;
    let batch: number[] = [];
    const flush = async () => {
      const inos = batch;
      batch = [];
      await onBatch(inos);
      seen += inos.length;
      onProgress?.(seen, bound);
    };
    for await (const key of client.scanIterator({ MATCH: `${prefix}*`, COUNT: 1000 })) {
      batch.push(Number(key.slice(prefix.length)));
      if (batch.length >= 1000) await flush();
    }
    if (batch.length) await flush();
  }

  async function get(ino: number): Promise<Inode> {
    const f = await client.hGetAll(ik(ino));
    if (f.m === undefined) throw fsError("ENOENT", `inode ${ino} not found`);
    return parseRecord(ino, f);
  }

  return {
    async init(rootMode, uid, gid) {
      const now = nowNs().toString();
      const created = await client.hSetNX(ik(1), "m", String(S_IFDIR | (rootMode & 0o7777)));
      if (created) {
        await client.hSet(ik(1), { u: uid, g: gid, r: 0, s: 0, n: 2, a: now, t: now, c: now, v: 1, p: 0, nm: "" });
        await client.setNX(`${P}next`, "1");
      }
    },
    get,
    async getMany(inos) {
      const all = await Promise.all(inos.map((i) => client.hGetAll(ik(i))));
      return all.map((f, i) => (f.m === undefined ? undefined : parseRecord(inos[i]!, f)));
    },
    async lookup(parent, name) {
      return parseFlat(await run("lookup", [parent, name]));
    },
    async create(parent, name, init) {
      const now = nowNs();
      const mtime = init.mtime ?? now;
      const atime = init.atime ?? mtime;
      const version = init.version ?? newVersion();
      const gen = init.gen ?? newGeneration();
      const [ino, mode, gid, raised] = (await run("create", [parent, name, init.mode, init.uid, init.gid, init.rdev ?? 0, init.size ?? 0, atime, mtime, now, init.target ?? "", init.holder ?? "", init.ino ?? "", version, init.above ?? 0, gen])) as [number, number, number, number];
      if (ino > handedOut) handedOut = ino;
      if (raised) wentBack = true;
      const dir = (init.mode & S_IFMT) === S_IFDIR;
      publish({ added: [[parent, name]], inodes: [parent] });
      const rec: Inode = { ino, mode, uid: init.uid, gid, rdev: init.rdev ?? 0, size: init.size ?? 0, nlink: dir ? 2 : 1, atime, mtime, ctime: now, version, gen, parent, name };
      if (init.target !== undefined) rec.target = init.target;
      return rec;
    },
    async reserveInodes(count) {
      const end = await client.incrBy(`${P}next`, count);
      if (end > handedOut) handedOut = end;
      return end - count + 1;
    },
    async inodeCounter() {
      const r = { counter: Number((await client.get(`${P}next`)) ?? 0), handedOut, wentBack };
      wentBack = false;
      return r;
    },
    async instanceId() {
      return /run_id:(\w+)/.exec(await client.info("server"))?.[1] ?? "";
    },
    async raiseInodeCounter(n) {
      await run("raisecounter", [n]);
    },
    async link(ino, newParent, newName, fromPath, toPath) {
      const [told, ...flat] = (await run("link", [ino, newParent, newName, nowNs(), opts.nodeId, fromPath, toPath])) as [string[], ...unknown[]];
      const r = parseFlat(flat);
      publish({ added: [[newParent, newName]], inodes: [ino, newParent], todo: told });
      return r;
    },
    async takeWriteLease(ino, node, ttlMs) {
      return (await run("takelease", [ino, node, ttlMs])) === 1;
    },
    async releaseWriteLease(ino, node) {
      await run("droplease", [ino, node]);
    },
    async extraNames(ino) {
      return (await client.sMembers(`${P}l:${ino}`)).map((e) => {
        const slash = e.indexOf("/");
        return { parent: Number(e.slice(0, slash)), name: e.slice(slash + 1) };
      });
    },
    async remove(parent, name, dir, path) {
      const r = (await run("remove", [parent, name, dir ? 1 : 0, nowNs(), opts.nodeId, path])) as [number, number, number, string[], string];
      await publish({ removed: [[parent, name]], inodes: [parent, r[0]], todo: r[3] }, true);
      return { ino: r[0], nlink: r[1], dir: r[2] === 1, ...(r[4] ? { held: Number(r[4]) } : {}) };
    },
    async rename(parent, name, newParent, newName, flags, fromPath, toPath) {
      const r = (await run("rename", [parent, name, newParent, newName, flags, nowNs(), opts.nodeId, fromPath, toPath])) as [number, number, number, number, number, string[]];
      const moved = [parent, newParent, r[0]!, ...(r[1] ? [r[1]] : []), ...(r[4] ? [r[4]] : [])];
      const told = r[5];
      if (r[4]) await publish({ removed: [[parent, name], [newParent, newName]], added: [[parent, name], [newParent, newName]], inodes: moved, todo: told }, true);
      else await publish({ removed: [[parent, name], [newParent, newName]], added: [[newParent, newName]], inodes: moved, todo: told }, true);
      const out: Renamed = { ino: r[0]! };
      if (r[1]) out.replaced = { ino: r[1], nlink: r[2]!, dir: r[3] === 1 } satisfies Removed;
      if (r[4]) out.exchanged = r[4];
      return out;
    },
    async setAttrs(ino, ch: AttrChange) {
      const kv: (string | number | bigint)[] = ["c", nowNs()];
      if (ch.mode !== undefined) kv.push("m", ch.mode);
      if (ch.uid !== undefined) kv.push("u", ch.uid);
      if (ch.gid !== undefined) kv.push("g", ch.gid);
      if (ch.atime !== undefined) kv.push("a", ch.atime);
      if (ch.mtime !== undefined) kv.push("t", ch.mtime);
      const r = parseFlat(await run("setattrs", [ino, ...kv]));
      await publish({ inodes: [ino] }, true);
      return r;
    },
    async setData(ino, size, mtime, ctime, holder, path, version = newVersion()) {
      const [told, flat] = (await run("setdata", [ino, size, mtime, ctime, holder, path, version])) as [string[], unknown];
      publish({ inodes: [ino], data: [ino], todo: told });
      return parseFlat(flat);
    },
    async purge(ino) {
      await run("purge", [ino]);
    },
    async listDir(ino) {
      const [exists, ents] = await Promise.all([client.hGet(ik(ino), "m"), client.hGetAll(`${P}d:${ino}`)]);
      // node-redis answers null for a missing field.
      if (exists == null) throw fsError("ENOENT");
      const out: DirListing[] = [];
      for (const [name, v] of Object.entries(ents)) {
        const c = v.indexOf(":");
        out.push({ name, ino: Number(v.slice(0, c)), type: Number(v.slice(c + 1)) });
      }
      return out;
    },
    async getXattr(ino, name) {
      const v = await client.hGet(commandOptions({ returnBuffers: true }), `${P}x:${ino}`, name);
      return v === undefined || v === null ? undefined : new Uint8Array(v);
    },
    async setXattr(ino, name, value, flags) {
      await run("setxattr", [ino, name, Buffer.from(value), flags, nowNs()]);
      publish({ inodes: [ino] });
    },
    async listXattr(ino) {
      return client.hKeys(`${P}x:${ino}`);
    },
    async removeXattr(ino, name) {
      const n = await client.hDel(`${P}x:${ino}`, name);
      if (n === 0) throw fsError("ENODATA");
      await client.hSet(ik(ino), "c", nowNs().toString());
      publish({ inodes: [ino] });
    },
    async subscribe(onChanges, resync) {
      subscriber = client.duplicate();
      subscriber.on("error", () => {});
      // A reconnect means messages may have been lost meanwhile.
      let first = true;
      subscriber.on("ready", () => {
        if (!first) resync();
        first = false;
      });
      await subscriber.connect();
      await subscriber.subscribe(`${P}inval`, (msg) => {
        let m: { origin: string; seq: number; ack: boolean; changes: Invalidation[] };
        try {
          m = JSON.parse(msg) as typeof m;
        } catch {
          return;
        }
        if (m.origin === opts.nodeId || !Array.isArray(m.changes)) return;
        const ack = m.ack ? () => void client.publish(`${P}ack:${m.origin}`, `${opts.nodeId} ${m.seq}`).catch(() => {}) : undefined;
        onChanges(m.changes, ack);
      });
      await subscriber.subscribe(`${P}ack:${opts.nodeId}`, (msg) => {
        const [node, s] = msg.split(" ");
        if (node && unresponsive.delete(node)) opts.onSlowNodes?.("answering", [node]);
        const w = awaitingAcks.get(Number(s));
        if (!w || !node) return;
        w.need.delete(node);
        if (!w.need.size) w.done();
      });
    },
    async takeTodo() {
      const key = `${P}todo:${opts.nodeId}`;
      const [items] = (await client.multi().lRange(key, 0, -1).del(key).exec()) as unknown as [string[]];
      return items.map((i) => JSON.parse(i) as TodoEntry);
    },
    async locations(ino) {
      const h = await client.hGetAll(`${P}loc:${ino}`);
      return new Map(Object.entries(h).map(([k, v]) => [k, Number(v)]));
    },
    async holders(ino) {
      const [data, cached] = (await client.multi().hGetAll(`${P}loc:${ino}`).hGetAll(`${P}cc:${ino}`).exec()) as unknown as [Record<string, string>, Record<string, string>];
      return parseHolders(data, cached);
    },
    async heldBy(node, copies) {
      if (!copies.length) return [];
      const r = (await run("heldby", [node, ...copies.flatMap((c) => [String(c.ino), String(c.version)])])) as number[];
      return r.map((x) => x === 1);
    },
    async addCachedCopies(node, startedAt, copies) {
      return (await run("addcached", [node, String(startedAt), ...copies.flatMap((c) => [String(c.ino), String(c.version)])])) as number;
    },
    async dropCachedCopy(ino, node, version) {
      await run("dropcached", [String(ino), node, String(version)]);
    },
    nodes: nodesNow,
    async registerNode(node, ttlMs) {
      const [prevNode, prevSeen] = await Promise.all([client.hGet(`${P}nodes`, node.id), client.hGet(`${P}seen`, node.id)]);
      await client.hSet(`${P}nodes`, node.id, JSON.stringify(node));
      await client.set(`${P}hb:${node.id}`, String(Date.now()), { PX: ttlMs });
      await client.hSet(`${P}seen`, node.id, JSON.stringify({ at: Date.now(), cache: [] }));
      return { node: prevNode ?? undefined, seen: prevSeen ?? undefined };
    },
    async withdrawNode(nodeId, previous) {
      const tx = client.multi().del(`${P}hb:${nodeId}`);
      if (previous.node === undefined) tx.hDel(`${P}nodes`, nodeId);
      else tx.hSet(`${P}nodes`, nodeId, previous.node);
      if (previous.seen === undefined) tx.hDel(`${P}seen`, nodeId);
      else tx.hSet(`${P}seen`, nodeId, previous.seen);
      await tx.exec();
    },
    async heartbeat(nodeId, ttlMs, report) {
      const now = Date.now();
      await client.multi().set(`${P}hb:${nodeId}`, String(now), { PX: ttlMs }).hSet(`${P}seen`, nodeId, JSON.stringify({ at: now, cache: report?.cache ?? [] })).exec();
    },
    async forgetNode(id, onProgress) {
      const bound = Number((await client.get(`${P}next`)) ?? 0);
      let seen = 0, held = 0;
      let batch: string[] = [];
      /** Files whose root-path holders it was the last of: they may still have a cached copy. */
      const bare: number[] = [];
      const flush = async () => {
        const keys = batch;
        batch = [];
        const removed = await Promise.all(keys.map((k) => client.hDel(k, id)));
        const left = await Promise.all(keys.map((k, i) => (removed[i] && k.startsWith(`${P}loc:`) ? client.exists(k) : Promise.resolve(1))));
        keys.forEach((k, i) => {
          if (!removed[i] || !k.startsWith(`${P}loc:`)) return;
          held++;
          if (!left[i]) bare.push(Number(k.slice(`${P}loc:`.length)));
        });
        seen += keys.length;
        onProgress?.(seen, bound);
      };
      for (const match of [`${P}loc:*`, `${P}cc:*`]) {
        for await (const key of client.scanIterator({ MATCH: match, COUNT: 1000 })) {
          batch.push(key);
          if (batch.length >= 1000) await flush();
        }
      }
      if (batch.length) await flush();
      await client.multi().hDel(`${P}nodes`, id).hDel(`${P}seen`, id).del(`${P}todo:${id}`).del(`${P}hb:${id}`).exec();
      const known = await nodesNow();
      const [recs, holders] = await Promise.all([Promise.all(bare.map((i) => client.hGet(`${P}i:${i}`, "v"))), holdersMany(bare)]);
      const orphaned = bare.filter((_, i) => ![...holders[i]!.cached].some(([n, c]) => String(c.version) === recs[i] && known.get(n)?.startedAt === c.startedAt)).length;
      return { held, orphaned };
    },
    async scanFiles(onBatch, onProgress) {
      // Every inode, not every holder list: a file with no copy left must be counted too.
      await scanRecords(async (all) => {
        const recs = await Promise.all(all.map((i) => client.hmGet(`${P}i:${i}`, ["m", "s", "v"])));
        const regular = all.map((ino, i) => [ino, recs[i]!] as const).filter(([, r]) => r[0] && (Number(r[0]) & S_IFMT) === S_IFREG);
        const holders = await holdersMany(regular.map(([ino]) => ino));
        onBatch(regular.map(([ino, r], i) => ({ ino, size: Number(r[1] ?? 0), version: Number(r[2] ?? 0), holders: holders[i]! })));
      }, onProgress);
    },
    async scanInodes(onBatch, onProgress) {
      await scanRecords(async (all) => {
        // One transaction per inode: its record, holders and entries as of one moment (a file
        // written meanwhile must not look like holders of another version).
        const got = (await Promise.all(all.map((i) => client.multi().hmGet(ik(i), ["m", "s", "n", "v", "p", "nm"]).hGetAll(`${P}loc:${i}`).hGetAll(`${P}cc:${i}`).hGetAll(`${P}d:${i}`).exec()))) as unknown as [(string | null)[], Record<string, string>, Record<string, string>, Record<string, string>][];
        const out: ScannedInode[] = [];
        all.forEach((ino, k) => {
          const [r, loc, cc, ents] = got[k]!;
          // A record deleted between SCAN and the read has no mode: gone, not scanned.
          if (!r[0]) return;
          const mode = Number(r[0]);
          const s: ScannedInode = { ino, mode, size: Number(r[1] ?? 0), nlink: Number(r[2] ?? 1), version: Number(r[3] ?? 1), parent: Number(r[4] ?? 0), name: r[5] ?? "" };
          if ((mode & S_IFMT) === S_IFREG) s.holders = parseHolders(loc, cc);
          if ((mode & S_IFMT) === S_IFDIR) s.entries = Object.entries(ents).map(([name, v]) => ({ name, ino: Number(v.slice(0, v.indexOf(":"))), type: Number(v.slice(v.indexOf(":") + 1)) }));
          out.push(s);
        });
        onBatch(out);
      }, onProgress);
    },
    async orphans() {
      return (await client.sMembers(`${P}orphans`)).map(Number);
    },
    async dropHolder(ino, node, version, why) {
      return (await run("fsckdropholder", [ino, node, version, why])) === 1;
    },
    async dropDanglingEntry(parent, name, ino) {
      const done = (await run("fsckdropentry", [parent, name, ino])) === 1;
      // Kernels that cached the name must forget it.
      if (done) publish({ removed: [[parent, name]], inodes: [parent] });
      return done;
    },
    async settleOrphan(ino) {
      return (await run("fsckorphan", [ino])) as "unlisted" | "purged" | "kept";
    },
    async unregisterNode(nodeId) {
      // Only the heartbeat goes: the node stays known, so changes to its files are queued while it is away.
      await client.del(`${P}hb:${nodeId}`);
    },
    async close() {
      if (subscriber?.isOpen) await subscriber.disconnect().catch(() => {});
      if (!client.isOpen) return;
      // QUIT waits for Redis; when it is unreachable, drop the socket instead.
      if (!client.isReady) return void (await client.disconnect().catch(() => {}));
      await Promise.race([client.quit(), Bun.sleep(2000).then(() => client.disconnect())]).catch(() => client.disconnect().catch(() => {}));
    },
  };
}
