-- ARGV: P ino size mtime ctime holder path version -> {{nodes told}, record (packed), {watchers}}
-- The other holders' copies are now stale: they are told to drop them. The watchers (opening.lua)
-- are the nodes the writer waits for; they watch no more.
local ino = ARGV[2]
local k = P..'i:'..ino
if redis.call('EXISTS', k) == 0 then return redis.error_reply('ENOENT') end
local v = ARGV[8]
redis.call('HSET', k, 's', ARGV[3], 't', ARGV[4], 'c', ARGV[5], 'v', v)
local told = todo(ARGV[6], ino, {op = 'drop', path = ARGV[7], ino = tonumber(ino)})
redis.call('DEL', P..'loc:'..ino, P..'cc:'..ino)
if ARGV[6] ~= '' then redis.call('HSET', P..'loc:'..ino, ARGV[6], v) end
local watchers = redis.call('SMEMBERS', P..'cb:'..ino)
redis.call('DEL', P..'cb:'..ino)
return {told, packed(ino), watchers}
