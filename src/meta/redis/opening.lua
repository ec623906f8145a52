-- ARGV: P ino -> {{ino, fields...}, {loc fields...}, {cc fields...}}: an open's record and holders, as of one moment
local r = redis.call('HGETALL', P..'i:'..ARGV[2])
if #r == 0 then return redis.error_reply('ENOENT') end
table.insert(r, 1, ARGV[2])
return {r, redis.call('HGETALL', P..'loc:'..ARGV[2]), redis.call('HGETALL', P..'cc:'..ARGV[2])}
