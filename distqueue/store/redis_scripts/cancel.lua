-- cancel: ARGV id, now -> state after ('cancelled' or 'running'), or 'notfound', or
-- 'illegal:<state>' for a finished job
local id, now = ARGV[1], tonumber(ARGV[2])
local j = redis.call('HMGET', jobkey(id), 'state', 'queue', 'type', 'priority')
if not j[1] then return 'notfound' end
local state = j[1]
if state == 'running' then
  redis.call('HSET', jobkey(id), 'cancel_requested', '1')
  return 'running'
end
if state == 'queued' then
  drop_ready(id, j[2], j[3], j[4])
elseif state == 'scheduled' or state == 'retrying' then
  redis.call('ZREM', P .. ':scheduled', zid(id))
else
  return 'illegal:' .. state
end
finish(id, j[2], state, 'cancelled', now, nil)
return 'cancelled'
