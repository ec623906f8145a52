-- ARGV: P ino newparent newname now origin frompath topath -> {{nodes told}, record (packed), nodes watching newparent}
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
return {told, packed(ino), newname(np, ARGV[6])}
