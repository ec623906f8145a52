-- ARGV: P parent name mode uid gid rdev size atime mtime now target holder ino|'' version above gen replace origin changed
--   -> {ino, mode, gid, counter raised (0/1), replaced ino (0: none), its links left, nodes told,
--       the parent's ctime and nlink after it, nodes watching the parent (newname)}
-- replace: the name's path when the file was made before asking (written behind): a non-directory
-- another node made under the name meanwhile is replaced, as a rename over it would be.
-- changed: the file's own ctime (a create sent with its first data); the directory's times are now.
-- ino: taken from a block this node reserved (reserveInodes) instead of the counter.
-- A set-group-ID directory gives new entries its group, and new directories its set-group-ID bit.
return create1(ARGV)
