-- ARGV: P parent name -> record (packed), nil when there is no such name (the commonest answer: no error made)
local e = redis.call('HGET', P..'d:'..ARGV[2], ARGV[3])
if not e then return false end
return packed(entino(e))
