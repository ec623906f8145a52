-- ARGV: P ino
local ino = ARGV[2]
local n = redis.call('HGET', P..'i:'..ino, 'n')
if n and tonumber(n) > 0 then return 0 end
redis.call('DEL', P..'i:'..ino, P..'x:'..ino, P..'loc:'..ino, P..'cc:'..ino, P..'l:'..ino)
redis.call('SREM', P..'orphans', ino)
return 1
