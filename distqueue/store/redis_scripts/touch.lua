-- touch: ARGV id, token, lease_until, worker ('': any) -> 'ok', 'notfound' or 'stale'
-- The holder's lease of one running job ends at lease_until (sooner or later than it
-- did); its other jobs are untouched. Commands: one HMGET, one HSET, one ZADD.
local id, token, lease_until = ARGV[1], ARGV[2], ARGV[3]
local h = holder(id, token, ARGV[4])
if h ~= 'ok' then return h end
redis.call('HSET', jobkey(id), 'lease_until', lease_until)
zadd(P .. ':leases', lease_until, zid(id))
return reply('ok')
