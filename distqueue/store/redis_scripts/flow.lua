-- flow (set_limit, pause): ARGV 'limit', scope, name, limit (its JSON as limits()
-- gives it; '' removes it), concurrency, rate, period, burst, max_depth ('' each: none),
-- max_limits -> 'ok', or 'full' (a new limit beyond max_limits: nothing changed);
-- ARGV 'pause', queue, '1' (pause) or '0' (resume), until ('': none) -> 'ok';
-- ARGV 'resume_due', now, max -> the queues resumed (whose P:pause_until <= now, the
-- earliest first, at most max).
-- Writes P:limits, P:depth, P:paused and the claims' P:flow records (see _lib.lua);
-- a new or changed limit starts with a full bucket, and the pairs its scope parked go
-- back to P:pairs (the next claim parks those still blocked again), as do a resumed
-- queue's.
local flow = P .. ':flow'
-- the claims' record of a scope: "c r p b z" (see P:flow); none when it limits nothing
local function record(skey)
  local rec = redis.call('HGET', flow, skey)
  if not rec then return {'-', '-', '-', '-', '0'} end
  local t = {}
  for word in string.gmatch(rec, '%S+') do t[#t + 1] = word end
  return t
end
local function write(skey, t)
  if t[1] == '-' and t[2] == '-' and t[5] ~= '1' then
    redis.call('HDEL', flow, skey)
  else
    redis.call('HSET', flow, skey, table.concat(t, ' '))
  end
end
local function pause(queue, on, untl)
  local skey = 'queue\t' .. queue
  local t = record(skey)
  t[5] = on
  if on == '1' then
    redis.call('SADD', P .. ':paused', queue)
  else
    redis.call('SREM', P .. ':paused', queue)
  end
  if untl ~= '' then
    redis.call('ZADD', P .. ':pause_until', untl, queue)
  else
    redis.call('ZREM', P .. ':pause_until', queue)
  end
  write(skey, t)
  if on == '0' then unpark('pause\t' .. skey) end
end
if ARGV[1] == 'pause' then
  pause(ARGV[2], ARGV[3], ARGV[4])
  return 'ok'
end
if ARGV[1] == 'resume_due' then
  local due = redis.call('ZRANGEBYSCORE', P .. ':pause_until', '-inf', ARGV[2], 'LIMIT', 0,
                         tonumber(ARGV[3]))
  for _, queue in ipairs(due) do pause(queue, '0', '') end
  return due
end
local scope, name, limit = ARGV[2], ARGV[3], ARGV[4]
local skey = scope .. '\t' .. name
local old = redis.call('HGET', P .. ':limits', skey)
if limit == (old or '') then return 'ok' end -- as it is: its bucket is kept
if limit == '' then
  redis.call('HDEL', P .. ':limits', skey)
else
  if not old and redis.call('HLEN', P .. ':limits') >= tonumber(ARGV[10]) then return 'full' end
  redis.call('HSET', P .. ':limits', skey, limit)
end
if scope == 'queue' then
  if ARGV[9] ~= '' then
    redis.call('HSET', P .. ':depth', name, ARGV[9])
  else
    redis.call('HDEL', P .. ':depth', name)
  end
end
if name ~= '*' then
  local t = record(skey)
  t[1] = (ARGV[5] ~= '') and ARGV[5] or '-'
  if ARGV[6] ~= '' then
    t[2], t[3], t[4] = ARGV[6], ARGV[7], ARGV[8]
  else
    t[2], t[3], t[4] = '-', '-', '-'
  end
  write(skey, t)
  redis.call('HDEL', P .. ':tokens', skey) -- a new limit starts with a full bucket
  unpark('conc\t' .. skey)
  unpark('rate\t' .. skey)
end
return 'ok'
