-- ARGV: P ino name now
-- One script: an inode removed between the attribute's removal and its ctime's change would otherwise
-- get a hash holding only that ctime, a record of nothing.
local k = P..'i:'..ARGV[2]
if redis.call('EXISTS', k) == 0 then return redis.error_reply('ENOENT') end
if redis.call('HDEL', P..'x:'..ARGV[2], ARGV[3]) == 0 then return redis.error_reply('ENODATA') end
redis.call('HSET', k, 'c', ARGV[4])
return 1
