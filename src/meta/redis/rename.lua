-- ARGV: P parent name newparent newname flags now origin by (the caller's uid, '' for none: see sticky)
--   -> {ino, replacedIno, replacedNlink, replacedDir, exchangedIno, {nodes told}, version of the replaced file the origin held,
--       nodes watching the directories given a name (newname), from path, to path}
local parent, name, np, nn, flags, now = ARGV[2], ARGV[3], ARGV[4], ARGV[5], tonumber(ARGV[6]), ARGV[7]
local origin, by = ARGV[8], ARGV[9]
-- Whether directory dir is ino or lies beneath it.
local function within(dir, ino)
  local cur = dir
  while cur and cur ~= '1' and cur ~= '0' do
    if cur == ino then return true end
    cur = redis.call('HGET', P..'i:'..cur, 'p')
  end
  return false
end
local se = redis.call('HGET', P..'d:'..parent, name)
if not se then return redis.error_reply('ENOENT') end
local err = needdir(np) if err then return err end
local pp, npp = pathof(parent), pathof(np)
if not pp or not npp then return redis.error_reply('EIO a directory of the rename has no path to the root') end
local from, to = pp..'/'..name, npp..'/'..nn
local sino = entino(se)
local sdir = isdir(redis.call('HGET', P..'i:'..sino, 'm'))
if sdir and np ~= parent and within(np, sino) then return redis.error_reply('EINVAL cannot move a directory into itself') end
local de = redis.call('HGET', P..'d:'..np, nn)
if flags == 1 and de then return redis.error_reply('EEXIST') end
if flags == 2 and not de then return redis.error_reply('ENOENT') end
if not (de and entino(de) == sino) then
  err = sticky(parent, sino, by) if err then return err end
end
local rino, rn, rdir, xino, rheld = 0, 0, 0, 0, false
local told = {}
local function tell(list) for _, n in ipairs(list) do told[#told + 1] = n end end
if de then
  local dino = entino(de)
  if dino == sino then return {tonumber(sino), 0, 0, 0, 0, {}} end
  err = sticky(np, dino, by) if err then return err end
  local ddir = isdir(redis.call('HGET', P..'i:'..dino, 'm'))
  if flags == 2 then
    -- The target moves too: into parent, which must not lie beneath it.
    if ddir and np ~= parent and within(parent, dino) then return redis.error_reply('EINVAL cannot move a directory into itself') end
    redis.call('HSET', P..'d:'..parent, name, de)
    redis.call('HSET', P..'d:'..np, nn, se)
    setname(sino, parent, name, np, nn)
    setname(dino, np, nn, parent, name)
    if sdir ~= ddir and parent ~= np then
      local from, to = parent, np
      if ddir then from, to = np, parent end
      redis.call('HINCRBY', P..'i:'..from, 'n', -1)
      redis.call('HINCRBY', P..'i:'..to, 'n', 1)
    end
    touch(parent, now) touch(np, now)
    redis.call('HSET', P..'i:'..sino, 'c', now)
    redis.call('HSET', P..'i:'..dino, 'c', now)
    local swap = {op = 'swap', from = from, to = to}
    -- Once per node: a node holding both files swaps them once (twice would swap them back). The
    -- origin too: its disk follows in this order, after the changes queued for it before.
    if sdir or ddir then tell(todo('', nil, swap)) else tell(todo('', {sino, dino}, swap)) end
    local w = newname(np, origin)
    if np ~= parent then for _, n in ipairs(newname(parent, origin)) do w[#w + 1] = n end end
    return {tonumber(sino), 0, 0, 0, tonumber(dino), told, false, w, from, to}
  end
  if sdir and not ddir then return redis.error_reply('ENOTDIR') end
  if ddir and not sdir then return redis.error_reply('EISDIR') end
  if ddir then
    if redis.call('HLEN', P..'d:'..dino) > 0 then return redis.error_reply('ENOTEMPTY') end
    dropdir(dino)
    redis.call('HINCRBY', P..'i:'..np, 'n', -1)
    rino, rn, rdir = tonumber(dino), 0, 1
  else
    tell(todo('', dino, {op = 'rm', path = to}))
    rheld = redis.call('HGET', P..'loc:'..dino, origin)
    rino, rn = tonumber(dino), dropname(dino, np, nn, now)
  end
end
redis.call('HDEL', P..'d:'..parent, name)
redis.call('HSET', P..'d:'..np, nn, se)
setname(sino, parent, name, np, nn)
if sdir and parent ~= np then
  redis.call('HINCRBY', P..'i:'..parent, 'n', -1)
  redis.call('HINCRBY', P..'i:'..np, 'n', 1)
end
touch(parent, now)
if np ~= parent then touch(np, now) end
redis.call('HSET', P..'i:'..sino, 'c', now)
local mv = {op = 'mv', from = from, to = to}
-- The origin too: its disk follows in this order, after the changes queued for it before (and its
-- next start does it, should it die first).
if sdir then tell(todo('', nil, mv)) else tell(todo('', sino, mv)) end
return {tonumber(sino), rino, rn, rdir, xino, told, rheld, newname(np, origin), from, to}
