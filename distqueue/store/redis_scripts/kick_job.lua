-- kick_job: ARGV id, now -> the state it was in ('dead', 'scheduled' or 'retrying'),
-- 'notfound' or 'illegal:<state>'. A dead job is queued again as retry queues it
-- (failures and lost reset); a scheduled or retrying one is queued now, as promote
-- would queue it.
local id, now = ARGV[1], tonumber(ARGV[2])
local j = hmget(id, 'state', 'queue', 'type', 'priority', 'finished_at')
if not j.state then return 'notfound' end
if j.state == 'dead' then
  revive(id, j, now)
elseif j.state == 'scheduled' or j.state == 'retrying' then
  unschedule(id, j)
  requeue(id, j, j.state, now)
else
  return 'illegal:' .. j.state
end
return reply(j.state)
