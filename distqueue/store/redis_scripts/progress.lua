-- progress: ARGV id, token, progress JSON, worker (or '') -> 'ok' | 'notfound' | 'stale'
local h = holder(ARGV[1], ARGV[2], ARGV[4])
if h == 'ok' then redis.call('HSET', jobkey(ARGV[1]), 'progress', ARGV[3]) end
return h
