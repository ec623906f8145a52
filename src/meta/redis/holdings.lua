-- ARGV: P watcher ino... -> for each: {record (packed; false with none), {loc fields...}, {cc fields...}}, as of one moment
-- A watcher ('' for none) watches each file that has a record (as opening.lua).
local out = {}
for i = 3, #ARGV do
  local r = packed(ARGV[i])
  if r and ARGV[2] ~= '' then redis.call('SADD', P..'cb:'..ARGV[i], ARGV[2]) end
  out[i - 2] = {r, redis.call('HGETALL', P..'loc:'..ARGV[i]), redis.call('HGETALL', P..'cc:'..ARGV[i])}
end
return out
