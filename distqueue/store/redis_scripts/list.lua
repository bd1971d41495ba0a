-- list: ARGV state or '', queue or '', type or '', limit, before or '', scan
-- -> {ids, cursor}: the ids, newest first, matching every filter given, at most
-- `limit` of them, found among at most `scan` ids below `before`; cursor is the last
-- id looked at when there may be more to look at (call again with it as `before`),
-- '' when the index is exhausted or `limit` ids were found
local state, queue, type, limit, before = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local scan = tonumber(ARGV[6])
local zkey = (state ~= '') and (P .. ':state:' .. state) or (P .. ':all')
local max = (before ~= '') and ('(' .. before) or '+inf'
local filtered = queue ~= '' or type ~= ''
local ids = redis.call('ZREVRANGEBYSCORE', zkey, max, '-inf', 'LIMIT', 0,
  filtered and scan or limit)
local out = {}
for i, id in ipairs(ids) do
  local ok = true
  if filtered then
    local j = redis.call('HMGET', jobkey(id), 'queue', 'type')
    ok = (queue == '' or j[1] == queue) and (type == '' or j[2] == type)
  end
  if ok then
    out[#out + 1] = id
    if #out >= limit then return {out, ''} end
  end
end
if filtered and #ids == scan then return {out, ids[#ids]} end
return {out, ''}
