-- ARGV: P ino newparent newname now origin -> {{nodes told}, record (packed), nodes watching newparent, from path, to path}
local ino, np, nn, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
local k = P..'i:'..ino
local m = redis.call('HGET', k, 'm')
if not m then return redis.error_reply('ENOENT') end
if isdir(m) then return redis.error_reply('EPERM cannot hard-link a directory') end
local e = needdir(np) if e then return e end
if redis.call('HEXISTS', P..'d:'..np, nn) == 1 then return redis.error_reply('EEXIST') end
local from, npp = pathof(ino), pathof(np)
if not from or not npp then return redis.error_reply('EIO the file or directory has no path to the root') end
local to = npp..'/'..nn
redis.call('HINCRBY', k, 'n', 1)
redis.call('HSET', k, 'c', now)
redis.call('SREM', P..'orphans', ino)
redis.call('SADD', P..'l:'..ino, np..'/'..nn)
redis.call('HSET', P..'d:'..np, nn, ino..':'..bit.rshift(tonumber(m), 12))
touch(np, now)
local told = todo(ARGV[6], ino, {op = 'link', from = from, to = to})
return {told, packed(ino), newname(np, ARGV[6]), from, to}
