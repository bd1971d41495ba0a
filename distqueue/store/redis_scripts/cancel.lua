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
  -- out of its line (its member: in its hash), and its pair out of P:pairs with its
  -- last ready job
  local pair = j.queue .. '\t' .. j.type
  local key = P .. ':line:' .. pair
  if j.line then
    redis.call('ZREM', key, j.line)
  else -- queued by a version before P:format 3 after the store's migration
    redis.call('ZREM', P .. ':ready:' .. pair, id)
  end
  if redis.call('ZCARD', key) == 0 then srem(P .. ':pairs', pair) end
  incr(P .. ':prio', j.priority, -1)
  zrem(P .. ':queued_at', id)
elseif state == 'scheduled' or state == 'retrying' then
  unschedule(id, j)
elseif state == 'waiting' then
  unwait(id, j.after)
else
  return 'illegal:' .. state
end
finish(id, j, state, 'cancelled', now)
return reply('cancelled')
