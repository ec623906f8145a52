-- ARGV: P ino node version why(stale|unknown|absent) -> 1 when unlisted
-- stale: only while the record is at another version; unknown: only while the node is no member;
-- absent: the node (stopped, its root path checked) does not have the file.
local ino, node, v, why = ARGV[2], ARGV[3], ARGV[4], ARGV[5]
if redis.call('HGET', P..'loc:'..ino, node) ~= v then return 0 end
if why == 'stale' and redis.call('HGET', P..'i:'..ino, 'v') == v then return 0 end
if why == 'unknown' and redis.call('HEXISTS', P..'nodes', node) == 1 then return 0 end
redis.call('HDEL', P..'loc:'..ino, node)
return 1
