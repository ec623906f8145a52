-- ARGV: P ino field value ... -> record (packed)
local k = P..'i:'..ARGV[2]
if redis.call('EXISTS', k) == 0 then return redis.error_reply('ENOENT') end
local args = {}
for i = 3, #ARGV do args[#args + 1] = ARGV[i] end
if #args > 0 then redis.call('HSET', k, unpack(args)) end
return packed(ARGV[2])
