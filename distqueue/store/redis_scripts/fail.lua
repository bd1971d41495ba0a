-- fail: ARGV id, token, error JSON, now, retryable (0/1), base, factor, cap, jitter, u,
-- worker (or '') -> {'ok', state, run_at or ''} or {'notfound'} / {'stale'}
local id, token, err, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local h = holder(id, token, ARGV[11])
if h ~= 'ok' then return {h} end
local j = redis.call('HMGET', jobkey(id), 'queue', 'worker', 'failures', 'max_retries',
  'cancel_requested')
local failures = tonumber(j[3]) + 1
unlease(id, j[2])
redis.call('HSET', jobkey(id), 'failures', failures, 'error', err)
total('failed')
if j[5] == '1' then
  finish(id, j[1], 'running', 'cancelled', now, nil)
  return {'ok', 'cancelled', ''}
end
if ARGV[5] == '0' or failures > tonumber(j[4]) then
  finish(id, j[1], 'running', 'dead', now, nil)
  return {'ok', 'dead', ''}
end
local base, factor, cap = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local ceiling = cap
if failures - 1 <= 64 then ceiling = math.min(cap, base * factor ^ (failures - 1)) end
local run_at = now + ceiling * (1 - tonumber(ARGV[9]) * tonumber(ARGV[10]))
set_state(id, j[1], 'running', 'retrying')
redis.call('HSET', jobkey(id), 'run_at', num(run_at))
redis.call('HDEL', jobkey(id), 'lease_until')
redis.call('ZADD', P .. ':scheduled', run_at, zid(id))
total('retried')
return {'ok', 'retrying', num(run_at)}
