-- ARGV: P ino
local ino = ARGV[2]
local n = redis.call('HGET', P..'i:'..ino, 'n')
if n and tonumber(n) > 0 then return 0 end
dropfile(ino)
return 1
