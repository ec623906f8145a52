-- ARGV: P parent name wantdir(1/0) now origin by (the caller's uid, '' for none: see sticky) onlyino onlyversion ('' for any)
--   -> {ino, nlink, dir, {nodes told}, version origin held or '', path, changes queued for origin (a file's)}
local parent, name, now, origin = ARGV[2], ARGV[3], ARGV[5], ARGV[6]
local e = redis.call('HGET', P..'d:'..parent, name)
if not e then return redis.error_reply('ENOENT') end
local pp = pathof(parent)
if not pp then return redis.error_reply('EIO the directory has no path to the root') end
local path = pp..'/'..name
local ino = entino(e)
if ARGV[8] ~= '' and (tostring(ino) ~= ARGV[8] or redis.call('HGET', P..'i:'..ino, 'v') ~= ARGV[9]) then
  return redis.error_reply('ESTALE the name names another file, or another version of it, now')
end
local m = redis.call('HGET', P..'i:'..ino, 'm')
local d = isdir(m)
if ARGV[4] == '1' and not d then return redis.error_reply('ENOTDIR') end
if ARGV[4] == '0' and d then return redis.error_reply('EISDIR') end
if d and redis.call('HLEN', P..'d:'..ino) > 0 then return redis.error_reply('ENOTEMPTY') end
local err = sticky(parent, ino, ARGV[7]) if err then return err end
redis.call('HDEL', P..'d:'..parent, name)
touch(parent, now)
if d then
  redis.call('HINCRBY', P..'i:'..parent, 'n', -1)
  dropdir(ino)
  -- The origin too: files another node removed under it may still be on its disk, their removal
  -- queued before this one.
  return {tonumber(ino), 0, 1, todo('', nil, {op = 'rmdir', path = path}), '', path}
end
local told = todo(origin, ino, {op = 'rm', path = path})
local held = redis.call('HGET', P..'loc:'..ino, origin) or ''
-- The origin removes its own file at once, where its disk has it once the changes queued for it
-- before are made.
local behind = redis.call('LLEN', P..'todo:'..origin)
if not m then return {tonumber(ino), 0, 0, told, held, path, behind} end
return {tonumber(ino), dropname(ino, parent, name, now), 0, told, held, path, behind}
