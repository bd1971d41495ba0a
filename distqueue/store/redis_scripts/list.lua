-- list: ARGV state or '', queue or '', type or '', limit, before or ''
-- -> ids, newest first, matching every filter given
local state, queue, type, limit, before = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4]), ARGV[5]
local zkey = (state ~= '') and (P .. ':state:' .. state) or (P .. ':all')
local max = (before ~= '') and ('(' .. before) or '+inf'
local out = {}
local offset = 0
while #out < limit do
  local ids = redis.call('ZREVRANGEBYSCORE', zkey, max, '-inf', 'LIMIT', offset, 500)
  if #ids == 0 then break end
  for _, id in ipairs(ids) do
    local ok = true
    if queue ~= '' or type ~= '' then
      local j = redis.call('HMGET', jobkey(id), 'queue', 'type')
      ok = (queue == '' or j[1] == queue) and (type == '' or j[2] == type)
    end
    if ok then
      out[#out + 1] = id
      if #out >= limit then break end
    end
  end
  offset = offset + #ids
end
return out
