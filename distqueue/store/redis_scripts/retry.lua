-- retry: ARGV id, now -> 'ok', 'notfound' or 'illegal:<state>' (only dead or cancelled)
local id, now = ARGV[1], tonumber(ARGV[2])
local j = hmget(id, 'state', 'queue', 'type', 'priority', 'finished_at')
if not j.state then return 'notfound' end
if j.state ~= 'dead' and j.state ~= 'cancelled' then return 'illegal:' .. j.state end
zrem(P .. ':done:failed', id)
if j.finished_at then redis.call('HDEL', jobkey(id), 'finished_at') end
requeue(id, j, j.state, now, {'failures', 0, 'lost', 0})
total('retried')
return reply('ok')
