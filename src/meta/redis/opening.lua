-- ARGV: P ino watcher -> {record (packed), {loc fields...}, {cc fields...}}: an open's record and holders, as of one moment
-- A watcher ('' for none) is told of the next new version before its writer returns (setdata.lua).
local r = packed(ARGV[2])
if not r then return redis.error_reply('ENOENT') end
if ARGV[3] ~= '' then redis.call('SADD', P..'cb:'..ARGV[2], ARGV[3]) end
return {r, redis.call('HGETALL', P..'loc:'..ARGV[2]), redis.call('HGETALL', P..'cc:'..ARGV[2])}
