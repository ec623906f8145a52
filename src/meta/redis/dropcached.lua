-- ARGV: P ino node version
local e = redis.call('HGET', P..'cc:'..ARGV[2], ARGV[3])
if e and string.match(e, '^(%d+)') == ARGV[4] then redis.call('HDEL', P..'cc:'..ARGV[2], ARGV[3]) end
return 0
