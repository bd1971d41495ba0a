-- promote: ARGV now, batch -> ids of at most `batch` scheduled/retrying jobs made
-- queued, in (run_at, id) order; fewer than `batch`: none is due any more
local now = tonumber(ARGV[1])
local ids = due_in_order(P .. ':scheduled', now, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. ':scheduled', zid(id))
  requeue(id, hget(id, 'state'), now)
end
return ids
