-- purge: ARGV ok_before, failed_before, batch -> number deleted, at most `batch`
-- (fewer: nothing more is old enough), or ARGV 'one', id -> 'ok' | 'notfound' |
-- 'illegal:<state>'
-- Commands: per job one HMGET and one DEL; the indexes and counts once per call.
local function delete(id)
  local j = redis.call('HMGET', jobkey(id), 'state', 'queue', 'unique_key', 'type')
  if j[1] == 'dead' then unbury(id, {queue = j[2], type = j[4]}) end
  zrem(P .. ':state:' .. j[1], id)
  zrem(P .. ':all', id)
  zrem(P .. ':done:ok', id)
  zrem(P .. ':done:failed', id)
  if j[3] then hdel(P .. ':unique', j[3]) end
  redis.call('DEL', jobkey(id))
  count(j[2], j[1], nil)
  total('purged')
end
if ARGV[1] == 'one' then
  local state = hget(ARGV[2], 'state')
  if not state then return 'notfound' end
  if state ~= 'succeeded' and state ~= 'dead' and state ~= 'cancelled' then
    return 'illegal:' .. state
  end
  delete(ARGV[2])
  return reply('ok')
end
local n, batch = 0, tonumber(ARGV[3])
for _, spec in ipairs({{':done:ok', ARGV[1]}, {':done:failed', ARGV[2]}}) do
  if n < batch then
    local ids = redis.call('ZRANGEBYSCORE', P .. spec[1], '-inf', tonumber(spec[2]),
      'LIMIT', 0, batch - n)
    for _, id in ipairs(ids) do delete(id) end
    n = n + #ids
  end
end
return reply(n)
