-- ARGV: P ino -> {record (packed), {loc fields...}, {cc fields...}}: an open's record and holders, as of one moment
local r = packed(ARGV[2])
if not r then return redis.error_reply('ENOENT') end
return {r, redis.call('HGETALL', P..'loc:'..ARGV[2]), redis.call('HGETALL', P..'cc:'..ARGV[2])}
