-- ARGV: P parent name -> {ino, fields...}, nil when there is no such name (the commonest answer: no error made)
local e = redis.call('HGET', P..'d:'..ARGV[2], ARGV[3])
if not e then return false end
local ino = entino(e)
local r = redis.call('HGETALL', P..'i:'..ino)
table.insert(r, 1, ino)
return r
