-- promote: ARGV now, batch -> ids of at most `batch` scheduled/retrying jobs made
-- queued, in (run_at, id) order; fewer than `batch`: none is due any more
local now = tonumber(ARGV[1])
local ids = due_in_order(P .. ':scheduled', now, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  zrem(P .. ':scheduled', zid(id))
  local j = hmget(id, 'state', 'queue', 'type', 'priority')
  requeue(id, j, j.state, now)
end
return reply(ids)
