-- ARGV: P parent name mode uid gid rdev size atime mtime now target holder ino|'' version above gen replace origin changed
--   -> {ino, mode, gid, counter raised (0/1), replaced ino (0: none), its links left, nodes told,
--       the parent's ctime and nlink after it, nodes watching the parent (newname)}
-- replace: the name's path when the file was made before asking (written behind): a non-directory
-- another node made under the name meanwhile is replaced, as a rename over it would be.
-- changed: the file's own ctime (a create sent with its first data); the directory's times are now.
-- ino: taken from a block this node reserved (reserveInodes) instead of the counter.
-- A set-group-ID directory gives new entries its group, and new directories its set-group-ID bit.
local parent, name = ARGV[2], ARGV[3]
local e = needdir(parent) if e then return e end
local dk = P..'d:'..parent
local rino, rn, told = 0, 0, {}
local old = redis.call('HGET', dk, name)
if old then
  if not ARGV[18] or ARGV[18] == '' then return redis.error_reply('EEXIST') end
  local dino, dtype = string.match(old, '^(%d+):(%d+)$')
  if tonumber(dtype) == 4 then return redis.error_reply('EISDIR') end
  -- A sticky directory lets only a file's owner (or the directory's) take its name away.
  local pm = redis.call('HMGET', P..'i:'..parent, 'm', 'u')
  if bit.band(tonumber(pm[1]), 512) ~= 0 and pm[2] ~= ARGV[5] and redis.call('HGET', P..'i:'..dino, 'u') ~= ARGV[5] then return redis.error_reply('EEXIST') end
  told = todo(ARGV[13], dino, {op = 'rm', path = ARGV[18]})
  rino, rn = tonumber(dino), dropname(dino, parent, name, ARGV[11])
end
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
  'a', ARGV[9], 't', ARGV[10], 'c', ARGV[20], 'v', ARGV[15], 'p', parent, 'nm', name, 'gn', ARGV[17])
if ARGV[12] ~= '' then redis.call('HSET', k, 'l', ARGV[12]) end
redis.call('HSET', dk, name, ino..':'..bit.rshift(mode, 12))
if dir then redis.call('HINCRBY', pk, 'n', 1) end
local ctime = touch(parent, ARGV[11])
if ARGV[13] ~= '' then redis.call('HSET', P..'loc:'..ino, ARGV[13], ARGV[15]) end
return {tonumber(ino), mode, tonumber(gid), raised, rino, rn, told, ctime, tonumber(redis.call('HGET', pk, 'n')), newname(parent, ARGV[19])}
