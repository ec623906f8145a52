-- ARGV: P ino... -> for each, its record (packed; false with none), as of one moment
local out = {}
for i = 2, #ARGV do out[i - 1] = packed(ARGV[i]) end
return out
