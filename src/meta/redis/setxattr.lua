-- ARGV: P ino name value flags(1 create, 2 replace)
local k = P..'i:'..ARGV[2]
if redis.call('EXISTS', k) == 0 then return redis.error_reply('ENOENT') end
local xk = P..'x:'..ARGV[2]
local has = redis.call('HEXISTS', xk, ARGV[3]) == 1
local f = tonumber(ARGV[5])
if f == 1 and has then return redis.error_reply('EEXIST') end
if f == 2 and not has then return redis.error_reply('ENODATA') end
redis.call('HSET', xk, ARGV[3], ARGV[4])
redis.call('HSET', k, 'c', ARGV[6])
return 1
