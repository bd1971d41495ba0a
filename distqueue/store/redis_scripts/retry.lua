-- retry: ARGV id, now -> 'ok', 'notfound' or 'illegal:<state>' (only dead or cancelled)
local id, now = ARGV[1], tonumber(ARGV[2])
local j = redis.call('HMGET', jobkey(id), 'state')
if not j[1] then return 'notfound' end
if j[1] ~= 'dead' and j[1] ~= 'cancelled' then return 'illegal:' .. j[1] end
redis.call('ZREM', P .. ':done:failed', id)
redis.call('HSET', jobkey(id), 'failures', 0, 'lost', 0)
redis.call('HDEL', jobkey(id), 'finished_at')
requeue(id, j[1], now)
total('retried')
return 'ok'
