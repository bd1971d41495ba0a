-- cancel: ARGV id, now -> state after ('cancelled' or 'running'), or 'notfound', or
-- 'illegal:<state>' for a finished job. The jobs waiting for a job it cancels move on
-- (finish in _lib.lua).
local id, now = ARGV[1], tonumber(ARGV[2])
local j = hmget(id, 'state', 'queue', 'type', 'priority', 'waiters', 'after')
if not j.state then return 'notfound' end
local state = j.state
if state == 'running' then
  redis.call('HSET', jobkey(id), 'cancel_requested', '1')
  return 'running'
end
if state == 'queued' then
  -- out of its ready zset, and its pair out of P:pairs with its last ready job
  local pair = j.queue .. '\t' .. j.type
  local key = P .. ':ready:' .. pair
  redis.call('ZREM', key, id)
  if redis.call('ZCARD', key) == 0 then srem(P .. ':pairs', pair) end
  incr(P .. ':prio', j.priority, -1)
elseif state == 'scheduled' or state == 'retrying' then
  zrem(P .. ':scheduled', zid(id))
elseif state == 'waiting' then
  unwait(id, j.after)
else
  return 'illegal:' .. state
end
finish(id, j, state, 'cancelled', now)
return reply('cancelled')
