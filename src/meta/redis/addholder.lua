-- ARGV: P ino node version -> 1 listed, 0 the file is at another version now (or gone): the copy is stale
local k = P..'i:'..ARGV[2]
if redis.call('HGET', k, 'v') ~= ARGV[4] then return 0 end
redis.call('HSET', P..'loc:'..ARGV[2], ARGV[3], ARGV[4])
return 1
