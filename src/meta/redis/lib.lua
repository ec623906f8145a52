-- Prepended to every script (scripts.ts): the key prefix and helpers they share.
-- ARGV[1] of every script is the key prefix P; scripts build keys from it themselves (see keys.ts).
-- KEYS[1] (P next) only routes the call to the filesystem's slot on a Redis Cluster.
local P = ARGV[1]
-- ino's record as one string (RECORD, set before this file by scripts.ts: record-codec.ts's
-- RECORD_FIELDS): "{ino}\0{value}\0..." with '' where a field is absent; false when there is none
local function packed(ino)
  local v = redis.call('HMGET', P..'i:'..ino, unpack(RECORD))
  if not v[1] then return false end
  for i = 1, #RECORD do if not v[i] then v[i] = '' end end
  return ino..'\0'..table.concat(v, '\0')
end
local function isdir(m) return m and bit.band(tonumber(m), 61440) == 16384 end
local function entino(e) return string.match(e, '^(%d+)') end
-- The refusal of ino as a directory to make names in, given its mode m (false: no record); nil if it is one.
local function notdir(ino, m)
  if not m then return redis.error_reply('ENOENT directory '..ino..' is gone') end
  if not isdir(m) then return redis.error_reply('ENOTDIR') end
  return nil
end
local function needdir(ino) return notdir(ino, redis.call('HGET', P..'i:'..ino, 'm')) end
-- times are nanoseconds as decimal strings, past what a Lua number holds exactly: compared and
-- counted as strings
local function later(a, b) return #a > #b or (#a == #b and a > b) end
local function plusone(s)
  local i = #s
  while i > 0 and s:sub(i, i) == '9' do i = i - 1 end
  if i == 0 then return '1'..string.rep('0', #s) end
  return s:sub(1, i - 1)..string.char(s:byte(i) + 1)..string.rep('0', #s - i)
end
-- a directory's times move forward with every change in it, never back: a change stamped before the
-- last one (another node's clock, a create made before it was written) gets the last one's time plus 1 ns;
-- stamped: the time a change at now gets after one at cur; touch: sets it, returns it
local function stamped(cur, now)
  if cur and not later(now, cur) then return plusone(cur) end
  return now
end
local function touch(ino, now)
  local k = P..'i:'..ino
  now = stamped(redis.call('HGET', k, 'c'), now)
  redis.call('HSET', k, 't', now, 'c', now)
  return now
end
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
-- The namespace path of ino's primary name now ('' for the root), or nil if its chain is broken.
-- Queued changes carry paths from here, in the order the changes happened: a node's cache of paths
-- may lag a rename its disk already followed, or lead one it has not.
local function pathof(ino)
  local parts = {}
  local cur = tostring(ino)
  while cur ~= '1' do
    if #parts > 4096 then return nil end
    local r = redis.call('HMGET', P..'i:'..cur, 'p', 'nm')
    if not r[1] then return nil end
    table.insert(parts, 1, r[2])
    cur = r[1]
  end
  if #parts == 0 then return '' end
  return '/'..table.concat(parts, '/')
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
-- How long a deleted inode's number is remembered as deleted (seconds): a node away longer that also
-- lost its queued delete publishes the file (or directory) again.
local GONE_KEEP = 30 * 86400
-- An inode's record went for good: remembered as deleted (not lost by Redis: see MetadataStore.deleted).
local function gone(ino)
  local now = tonumber(redis.call('TIME')[1])
  redis.call('ZADD', P..'gone', now, ino)
  redis.call('ZREMRANGEBYSCORE', P..'gone', '-inf', '(' .. (now - GONE_KEEP))
end
local function dropfile(ino)
  redis.call('DEL', P..'i:'..ino, P..'x:'..ino, P..'loc:'..ino, P..'cc:'..ino, P..'l:'..ino, P..'cb:'..ino)
  redis.call('SREM', P..'orphans', ino)
  gone(ino)
end
local function dropdir(ino)
  redis.call('DEL', P..'i:'..ino, P..'d:'..ino, P..'x:'..ino, P..'loc:'..ino, P..'cc:'..ino, P..'l:'..ino, P..'cb:'..ino, P..'dw:'..ino)
  gone(ino)
end
-- The sticky rule for taking name-holder ino's name away from dir, for caller uid by ('': the
-- daemon's own change): the caller's kernel checked it against the file it knew under the name,
-- which another node's change may have replaced since. An error reply, or nil.
local function sticky(dir, ino, by)
  if by == '' or by == '0' then return nil end
  local d = redis.call('HMGET', P..'i:'..dir, 'm', 'u')
  if not d[1] or bit.band(tonumber(d[1]), 512) == 0 or d[2] == by then return nil end
  if redis.call('HGET', P..'i:'..ino, 'u') == by then return nil end
  return redis.error_reply('EPERM')
end
-- Make node a watcher of ino (setdata.lua waits for it): whether it is one. Not when Redis refuses
-- the write for want of memory: what is read is answered all the same (a full Redis takes no
-- writes, reads must go on), and the caller does not take the file as watched.
local function watch(ino, node)
  local r = redis.pcall('SADD', P..'cb:'..ino, node)
  if type(r) == 'table' and r.err then
    if string.sub(r.err, 1, 3) == 'OOM' then return false end
    error(r)
  end
  return true
end
-- A name came into dir: the nodes answering lookups there from their listings (listing.lua), other
-- than origin, must hear of it before origin returns; they watch no more (origin knows its own names).
local function newname(dir, origin)
  local k = P..'dw:'..dir
  local others = {}
  for _, n in ipairs(redis.call('SMEMBERS', k)) do
    if n ~= origin then others[#others + 1] = n end
  end
  if #others > 0 then redis.call('SREM', k, unpack(others)) end
  return others
end
-- What the creates of one script have read of each directory they made names in (memo, by its inode
-- number), kept as they change it: a batch (createmany.lua) reads a directory once, not once a file.
-- nil and a refusal when parent is gone or no directory.
local function madein(memo, parent)
  local d = memo[parent]
  if d then return d end
  local r = redis.call('HMGET', P..'i:'..parent, 'm', 'g', 'u', 'c', 'n')
  local e = notdir(parent, r[1])
  if e then return nil, e end
  d = {m = tonumber(r[1]), g = r[2], u = r[3], c = r[4], n = tonumber(r[5])}
  memo[parent] = d
  return d
end
-- One create, its arguments A as create.lua's ARGV (createmany.lua passes each file's, and one memo
-- for them all, see madein): its answer, or a refusal (redis.error_reply).
local function create1(A, memo)
  local parent, name = A[2], A[3]
  local d, e = madein(memo or {}, parent)
  if not d then return e end
  local dk = P..'d:'..parent
  local rino, rn, told = 0, 0, {}
  local old = redis.call('HGET', dk, name)
  if old then
    if not A[18] or A[18] == '' then return redis.error_reply('EEXIST') end
    local dino, dtype = string.match(old, '^(%d+):(%d+)$')
    if tonumber(dtype) == 4 then return redis.error_reply('EISDIR') end
    -- A sticky directory lets only a file's owner (or the directory's) take its name away. Refused as
    -- the open of the file there would be, had this create come after it: EACCES, never EEXIST
    -- (which a create without O_EXCL must not return).
    if bit.band(d.m, 512) ~= 0 and d.u ~= A[5] and redis.call('HGET', P..'i:'..dino, 'u') ~= A[5] then return redis.error_reply('EACCES') end
    told = todo(A[13], dino, {op = 'rm', path = A[18]})
    rino, rn = tonumber(dino), dropname(dino, parent, name, A[11])
  end
  local ino = A[14]
  local raised = 0
  if not ino or ino == '' then
    ino = redis.call('INCR', P..'next')
    -- Behind numbers the caller has seen: Redis lost writes. No number may come again.
    if ino <= tonumber(A[16]) then
      ino = tonumber(A[16]) + 1000000
      redis.call('SET', P..'next', ino)
      raised = 1
    end
  end
  local mode = tonumber(A[4])
  local gid = A[6]
  local dir = bit.band(mode, 61440) == 16384
  local pk = P..'i:'..parent
  if bit.band(d.m, 1024) ~= 0 then
    gid = d.g
    if dir then mode = bit.bor(mode, 1024) end
  end
  local k = P..'i:'..ino
  redis.call('HSET', k, 'm', mode, 'u', A[5], 'g', gid, 'r', A[7], 's', A[8], 'n', dir and 2 or 1,
    'a', A[9], 't', A[10], 'c', A[20], 'v', A[15], 'p', parent, 'nm', name, 'gn', A[17])
  if A[12] ~= '' then redis.call('HSET', k, 'l', A[12]) end
  redis.call('HSET', dk, name, ino..':'..bit.rshift(mode, 12))
  if dir then d.n = redis.call('HINCRBY', pk, 'n', 1) end
  -- As touch, from the ctime the memo has as each create left it.
  local ctime = stamped(d.c, A[11])
  redis.call('HSET', pk, 't', ctime, 'c', ctime)
  d.c = ctime
  if A[13] ~= '' then redis.call('HSET', P..'loc:'..ino, A[13], A[15]) end
  -- The other watchers are told by the first create in parent; none is left watching for the next ones.
  local watchers = {}
  if not d.told then
    d.told = true
    watchers = newname(parent, A[19])
  end
  return {tonumber(ino), mode, tonumber(gid), raised, rino, rn, told, ctime, d.n, watchers}
end
