-- ARGV: P, then for each file in order the 19 values create.lua takes after P (parent ... changed)
--   -> for each file, create.lua's answer, or its refusal as a string ('EEXIST', 'ENOENT directory 5 is gone')
-- Each is made as create.lua would make it, one after another: a refusal leaves the others made.
local out = {}
local memo = {}
for i = 0, (#ARGV - 1) / 19 - 1 do
  local A = {ARGV[1]}
  for k = 1, 19 do A[k + 1] = ARGV[1 + i * 19 + k] end
  local r = create1(A, memo)
  out[#out + 1] = r.err or r
end
return out
