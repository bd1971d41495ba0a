-- cancel: ARGV id, now, running ('1' or '0', absent: '1') -> state after ('cancelled'
-- or 'running'), or 'notfound', or 'illegal:<state>' for a finished job, or
-- 'refused:running' for a running job when running is '0' (then nothing changes).
-- The jobs waiting for a job it cancels move on (finish in _lib.lua).
local id, now, running = ARGV[1], tonumber(ARGV[2]), ARGV[3] ~= '0'
local j = hmget(id, 'state', 'queue', 'type', 'priority', 'waiters', 'after', 'line')
if not j.state then return 'notfound' end
local state = j.state
if state == 'running' then
  if not running then return 'refused:running' end
  redis.call('HSET', jobkey(id), 'cancel_requested', '1')
  return 'running'
end
if state == 'queued' then
  unqueue(id, j)
elseif state == 'scheduled' or state == 'retrying' then
  unschedule(id, j)
elseif state == 'waiting' then
  unwait(id, j.after)
else
  return 'illegal:' .. state
end
finish(id, j, state, 'cancelled', now)
return reply('cancelled')
