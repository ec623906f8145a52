-- ARGV: P parent name ino -> 1 when removed (a directory's entry also gave its parent a link)
local e = redis.call('HGET', P..'d:'..ARGV[2], ARGV[3])
if not e or entino(e) ~= ARGV[4] or redis.call('EXISTS', P..'i:'..ARGV[4]) == 1 then return 0 end
redis.call('HDEL', P..'d:'..ARGV[2], ARGV[3])
if string.match(e, ':(%d+)$') == '4' and redis.call('EXISTS', P..'i:'..ARGV[2]) == 1 then redis.call('HINCRBY', P..'i:'..ARGV[2], 'n', -1) end
return 1
