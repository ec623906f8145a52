-- ARGV: P parent name wantdir(1/0) now origin path -> {ino, nlink, dir, {nodes told}, version origin held or ''}
local parent, name, now, origin, path = ARGV[2], ARGV[3], ARGV[5], ARGV[6], ARGV[7]
local e = redis.call('HGET', P..'d:'..parent, name)
if not e then return redis.error_reply('ENOENT') end
local ino = entino(e)
local m = redis.call('HGET', P..'i:'..ino, 'm')
local d = isdir(m)
if ARGV[4] == '1' and not d then return redis.error_reply('ENOTDIR') end
if ARGV[4] == '0' and d then return redis.error_reply('EISDIR') end
if d and redis.call('HLEN', P..'d:'..ino) > 0 then return redis.error_reply('ENOTEMPTY') end
redis.call('HDEL', P..'d:'..parent, name)
touch(parent, now)
if d then
  redis.call('HINCRBY', P..'i:'..parent, 'n', -1)
  dropdir(ino)
  return {tonumber(ino), 0, 1, todo(origin, nil, {op = 'rmdir', path = path})}
end
local told = todo(origin, ino, {op = 'rm', path = path})
local held = redis.call('HGET', P..'loc:'..ino, origin) or ''
if not m then return {tonumber(ino), 0, 0, told, held} end
return {tonumber(ino), dropname(ino, parent, name, now), 0, told, held}
