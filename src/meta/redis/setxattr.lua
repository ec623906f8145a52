-- ARGV: P ino name value flags(1 create, 2 replace) now max (bytes the file's names, each with its NUL, and values may take)
local k = P..'i:'..ARGV[2]
if redis.call('EXISTS', k) == 0 then return redis.error_reply('ENOENT') end
local xk = P..'x:'..ARGV[2]
local has = redis.call('HEXISTS', xk, ARGV[3]) == 1
local f = tonumber(ARGV[5])
if f == 1 and has then return redis.error_reply('EEXIST') end
if f == 2 and not has then return redis.error_reply('ENODATA') end
local total = #ARGV[3] + 1 + #ARGV[4]
local all = redis.call('HGETALL', xk)
for i = 1, #all, 2 do
  if all[i] ~= ARGV[3] then total = total + #all[i] + 1 + #all[i + 1] end
end
if total > tonumber(ARGV[7]) then return redis.error_reply('ENOSPC') end
redis.call('HSET', xk, ARGV[3], ARGV[4])
redis.call('HSET', k, 'c', ARGV[6])
return 1
