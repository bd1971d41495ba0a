-- claim_job (beanstalk's reserve-job): ARGV id, worker, now, lease_until ->
-- {'ok', {field, value, ...}}: the job whole (as HGETALL gives it, as it is after the
-- claim), or {'notfound'}, {'illegal', state} for a job that is not queued, or
-- {'expired'} for a queued job past its deadline, which ends dead as a claim ends it.
-- The job leaves its pair's line wherever it is in it (its member: in its hash), and
-- is leased as claim.lua leases a job: a new fencing token (attempts + 1), running
-- until lease_until, the same indexes and counts moved (P:prio, P:queued_at, the state
-- index and P:counts, P:leases, the worker's set, P:running with tc '1'). Pauses and
-- limits aside: no flow record is read and no rate token taken, but the job counts
-- towards its queue's and type's concurrency while it runs, as any claimed job does.
-- Its pair leaves P:pairs with its last queued job (a parked pair stays parked: the
-- claim that unparks it finds its line empty and drops it).
-- Commands: one HGETALL, one ZREM (and one ZCARD), one HSET (and an HDEL of a
-- progress report), the indexes and counts once.
local id, worker, now, lease_until = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local j = fields(redis.call('HGETALL', jobkey(id)))
if not j.state then return {'notfound'} end
if j.state ~= 'queued' then return {'illegal', j.state} end
unqueue(id, j)
if j.deadline and tonumber(j.deadline) < now then -- as claim.lua ends it
  local msg = 'deadline ' .. j.deadline .. ' passed before it started'
  finish(id, j, 'queued', 'dead', now, {'error',
    cjson.encode({kind = 'expired', message = msg, traceback = ''})})
  total('expired')
  return reply({'expired'})
end
local attempts = tonumber(j.attempts) + 1
local started = ARGV[3]
redis.call('HSET', jobkey(id), 'state', 'running', 'attempts', attempts,
  'worker', worker, 'lease_until', lease_until, 'started_at', started,
  'cancel_requested', '0', 'tc', '1')
if j.progress then redis.call('HDEL', jobkey(id), 'progress') end
move(id, j.queue, 'queued', 'running')
zadd(P .. ':leases', lease_until, zid(id))
sadd(P .. ':worker:' .. worker, id)
incr(P .. ':running', j.type, 1)
j.state, j.attempts, j.worker = 'running', tostring(attempts), worker
j.lease_until, j.started_at, j.cancel_requested, j.progress = lease_until, started, '0', nil
j.tc = '1'
j.line = nil -- (stays in the hash, meaning nothing now: not worth sending)
local flat = {}
for k, v in pairs(j) do
  flat[#flat + 1] = k
  flat[#flat + 1] = v
end
return reply({'ok', flat})
