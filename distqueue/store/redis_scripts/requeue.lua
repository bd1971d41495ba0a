-- requeue: ARGV id, token, now, priority ('': its own), run_at ('': none), worker ('':
-- any) -> {'ok', state after} or {'notfound'} / {'stale'}
-- The holder gives a running job back (beanstalk's release): queued at the back of its
-- (new) priority, or scheduled until run_at when that is after now; nothing counted
-- against it. A job whose cancel was asked for becomes cancelled (its waiters move on:
-- finish). The priority, when given, is its own from now on, whatever follows.
-- Commands: one HMGET and one HSET; the indexes and counts queued (as release).
local id, token, now = ARGV[1], ARGV[2], tonumber(ARGV[3])
local prio, run_at = ARGV[4], ARGV[5]
local h, j = holder(id, token, ARGV[6], 'queue', 'type', 'priority', 'tc', 'waiters',
  'cancel_requested')
if h ~= 'ok' then return {h} end
unlease(id, j)
local set = {}
if prio ~= '' then
  j.priority = prio
  set = {'priority', prio}
end
if j.cancel_requested == '1' then
  -- a cancel asked while it ran sticks: it never runs again
  finish(id, j, 'running', 'cancelled', now, set)
  return reply({'ok', 'cancelled'})
end
if run_at ~= '' and tonumber(run_at) > now then
  set[#set + 1] = 'state'; set[#set + 1] = 'scheduled'
  set[#set + 1] = 'run_at'; set[#set + 1] = num(tonumber(run_at))
  redis.call('HSET', jobkey(id), unpack(set))
  move(id, j.queue, 'running', 'scheduled')
  schedule(id, j, tonumber(run_at))
  return reply({'ok', 'scheduled'})
end
requeue(id, j, 'running', now, set)
return reply({'ok', 'queued'})
