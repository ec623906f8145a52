-- ARGV: P node (ino version)... -> for each, 1 when node holds that version in its root path
local r = {}
for i = 3, #ARGV, 2 do r[#r + 1] = redis.call('HGET', P..'loc:'..ARGV[i], ARGV[2]) == ARGV[i + 1] and 1 or 0 end
return r
