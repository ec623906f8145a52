-- ARGV: P ino... -> for each: {record (packed; false with none), {loc fields...}, {cc fields...}}, as of one moment
local out = {}
for i = 2, #ARGV do
  out[i - 1] = {packed(ARGV[i]), redis.call('HGETALL', P..'loc:'..ARGV[i]), redis.call('HGETALL', P..'cc:'..ARGV[i])}
end
return out
