-- ARGV: P ino node
local k = P..'w:'..ARGV[2]
if redis.call('GET', k) == ARGV[3] then redis.call('DEL', k) end
return 0
