-- ARGV: P ino node ttl -> 1 when node has the write lease of ino now
local k = P..'w:'..ARGV[2]
local cur = redis.call('GET', k)
if cur and cur ~= ARGV[3] then return 0 end
redis.call('SET', k, ARGV[3], 'PX', ARGV[4])
return 1
