-- promote: ARGV now, batch -> ids of at most `batch` scheduled/retrying jobs made
-- queued, in (run_at, id) order; fewer than `batch`: none is due any more. Also
-- unparks the pairs whose rate bucket has a token again (unpark_due; claims do too).
local now = tonumber(ARGV[1])
unpark_due(now) -- the pairs whose rate bucket has a token again go back to P:pairs
local ids = due_in_order(P .. ':scheduled', now, tonumber(ARGV[2]))
for _, id in ipairs(ids) do
  local j = hmget(id, 'state', 'queue', 'type', 'priority')
  unschedule(id, j)
  requeue(id, j, j.state, now)
end
return reply(ids)
