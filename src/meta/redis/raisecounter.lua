-- ARGV: P n: the inode counter becomes at least n
local cur = tonumber(redis.call('GET', P..'next') or '0')
if cur < tonumber(ARGV[2]) then redis.call('SET', P..'next', ARGV[2]) end
return 0
