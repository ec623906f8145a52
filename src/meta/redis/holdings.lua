-- ARGV: P ino... -> for each: {{ino, fields...} (just {ino} with no record), {loc fields...}, {cc fields...}}, as of one moment
local out = {}
for i = 2, #ARGV do
  local r = redis.call('HGETALL', P..'i:'..ARGV[i])
  table.insert(r, 1, ARGV[i])
  out[i - 1] = {r, redis.call('HGETALL', P..'loc:'..ARGV[i]), redis.call('HGETALL', P..'cc:'..ARGV[i])}
end
return out
