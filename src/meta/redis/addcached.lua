-- ARGV: P node startedAt (ino version)... -> how many were listed (a version no longer current is not)
local n = 0
for i = 4, #ARGV, 2 do
  if redis.call('HGET', P..'i:'..ARGV[i], 'v') == ARGV[i + 1] then
    redis.call('HSET', P..'cc:'..ARGV[i], ARGV[2], ARGV[i + 1]..' '..ARGV[3])
    n = n + 1
  end
end
return n
