-- ARGV: P watcher ino... -> for each: {record (packed; false with none), {loc fields...}, {cc fields...}, watching (1/0)}, as of one moment
-- A watcher ('' for none) watches each file that has a record (as opening.lua).
local out = {}
for i = 3, #ARGV do
  local r = packed(ARGV[i])
  local w = r and ARGV[2] ~= '' and watch(ARGV[i], ARGV[2])
  out[i - 2] = {r, redis.call('HGETALL', P..'loc:'..ARGV[i]), redis.call('HGETALL', P..'cc:'..ARGV[i]), w and 1 or 0}
end
return out
