-- ARGV: P dir watcher -> entries (HGETALL), as of one moment
-- The watcher is told of the next name that comes into dir before its maker returns (newname).
if not redis.call('HGET', P..'i:'..ARGV[2], 'm') then return redis.error_reply('ENOENT') end
redis.call('SADD', P..'dw:'..ARGV[2], ARGV[3])
return redis.call('HGETALL', P..'d:'..ARGV[2])
