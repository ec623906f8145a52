-- ARGV: P ino -> 'unlisted' | 'purged' | 'kept'
-- Open files are not recorded in Redis: an unlinked inode is purged only when no node is live.
local ino = ARGV[2]
local n = redis.call('HGET', P..'i:'..ino, 'n')
if n and tonumber(n) > 0 then
  redis.call('SREM', P..'orphans', ino)
  return 'unlisted'
end
if n then
  for _, id in ipairs(redis.call('HKEYS', P..'nodes')) do
    if redis.call('EXISTS', P..'hb:'..id) == 1 then return 'kept' end
  end
end
dropfile(ino)
return 'purged'
