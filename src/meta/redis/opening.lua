-- ARGV: P ino watcher -> {record (packed), {loc fields...}, {cc fields...}, watching (1/0)}: an open's record and holders, as of one moment
-- A watcher ('' for none) is told of the next new version before its writer returns (setdata.lua);
-- watching 0: Redis refused to note it (see watch), or none was asked.
local r = packed(ARGV[2])
if not r then return redis.error_reply('ENOENT') end
local w = ARGV[3] ~= '' and watch(ARGV[2], ARGV[3])
return {r, redis.call('HGETALL', P..'loc:'..ARGV[2]), redis.call('HGETALL', P..'cc:'..ARGV[2]), w and 1 or 0}
