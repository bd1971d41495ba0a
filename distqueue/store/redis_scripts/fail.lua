-- fail: ARGV id, token, error JSON, now, retryable (0/1), base, factor, cap, jitter, u,
-- worker (or ''), priority (or ''; else the job's priority from now on, whatever
-- follows) -> {'ok', state, run_at or ''} or {'notfound'} / {'stale'}
local id, token, err, now = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local h, j = holder(id, token, ARGV[11], 'queue', 'type', 'tc', 'waiters', 'failures',
  'max_retries', 'cancel_requested')
if h ~= 'ok' then return {h} end
local failures = tonumber(j.failures) + 1
unlease(id, j)
total('failed')
local set = {'failures', failures, 'error', err}
if ARGV[12] ~= '' then set[#set + 1] = 'priority'; set[#set + 1] = ARGV[12] end
if j.cancel_requested == '1' then
  finish(id, j, 'running', 'cancelled', now, set)
  return reply({'ok', 'cancelled', ''})
end
if ARGV[5] == '0' or failures > tonumber(j.max_retries) then
  finish(id, j, 'running', 'dead', now, set)
  return reply({'ok', 'dead', ''})
end
local base, factor, cap = tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])
local ceiling = cap
if failures - 1 <= 64 then ceiling = math.min(cap, base * factor ^ (failures - 1)) end
local run_at = now + ceiling * (1 - tonumber(ARGV[9]) * tonumber(ARGV[10]))
set[#set + 1] = 'state'; set[#set + 1] = 'retrying'
set[#set + 1] = 'run_at'; set[#set + 1] = num(run_at)
redis.call('HSET', jobkey(id), unpack(set))
move(id, j.queue, 'running', 'retrying')
schedule(id, j, run_at)
total('retried')
return reply({'ok', 'retrying', num(run_at)})
