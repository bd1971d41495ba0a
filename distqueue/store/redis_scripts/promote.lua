-- promote: ARGV now -> ids of scheduled/retrying jobs made queued, in (run_at, id) order
local ids = due_in_order(P .. ':scheduled', tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. ':scheduled', id)
  requeue(id, hget(id, 'state'))
end
return ids
