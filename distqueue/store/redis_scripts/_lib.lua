-- distqueue Redis store: shared helpers, prepended to every script.
--
-- Key schema. KEYS[1] is the prefix with its hash tag, "{dq}" by default: every key
-- of one store shares that tag, so each script's keys live in one Cluster slot.
--   P:next_id                counter of job ids (never reused)
--   P:seq                    counter giving ready jobs their FIFO order
--   P:job:<id>               hash: every field of a job (strings; floats as %.17g)
--   P:ready:<queue>\t<type>  zset of queued ids, score priority * 2^48 + seq
--   P:pairs                  set of "<queue>\t<type>" that have a ready zset
--   P:scheduled              zset of scheduled and retrying ids by run_at
--   P:leases                 zset of running ids by lease_until
--   P:worker:<w>             set of the ids worker w holds
--   P:unique                 hash unique_key -> id
--   P:state:<state>          zset of ids in that state (score = id), for LIST
--   P:all                    zset of every id (score = id), for LIST
--   P:done:ok, P:done:failed zset of finished ids by finished_at, for PURGE
--   P:counts                 hash "<queue>\t<state>" -> jobs
--   P:prio                   hash priority -> queued jobs
--   P:totals                 hash of running totals (submitted, succeeded, ...)
--   P:types                  hash job type -> last time a worker declared it
local P = KEYS[1]
local PRIO_SHIFT = 281474976710656 -- 2^48: priority outranks any seq

local function num(x) return string.format('%.17g', x) end
local function jobkey(id) return P .. ':job:' .. id end
local function hget(id, f) return redis.call('HGET', jobkey(id), f) end

local function count(queue, old, new)
  if old then redis.call('HINCRBY', P .. ':counts', queue .. '\t' .. old, -1) end
  if new then redis.call('HINCRBY', P .. ':counts', queue .. '\t' .. new, 1) end
end
local function total(key, n) redis.call('HINCRBY', P .. ':totals', key, n or 1) end

-- move a job to a state: its hash, the per-state index and the counts
local function set_state(id, queue, old, new)
  if old then redis.call('ZREM', P .. ':state:' .. old, id) end
  redis.call('ZADD', P .. ':state:' .. new, id, id)
  redis.call('HSET', jobkey(id), 'state', new)
  count(queue, old, new)
end

local function push_ready(id, queue, type, prio)
  local seq = redis.call('INCR', P .. ':seq')
  local pair = queue .. '\t' .. type
  redis.call('ZADD', P .. ':ready:' .. pair, tonumber(prio) * PRIO_SHIFT + seq, id)
  redis.call('SADD', P .. ':pairs', pair)
  redis.call('HINCRBY', P .. ':prio', prio, 1)
end

local function drop_ready(id, queue, type, prio)
  redis.call('ZREM', P .. ':ready:' .. queue .. '\t' .. type, id)
  redis.call('HINCRBY', P .. ':prio', prio, -1)
end

-- queue a job again (at the back of its priority); old is its current state
local function requeue(id, old)
  local j = redis.call('HMGET', jobkey(id), 'queue', 'type', 'priority')
  redis.call('HSET', jobkey(id), 'cancel_requested', '0')
  redis.call('HDEL', jobkey(id), 'lease_until', 'run_at')
  set_state(id, j[1], old, 'queued')
  push_ready(id, j[1], j[2], j[3])
end

local function finish(id, queue, old, new, now, err)
  set_state(id, queue, old, new)
  redis.call('HSET', jobkey(id), 'finished_at', num(now))
  redis.call('HDEL', jobkey(id), 'lease_until', 'run_at')
  if err then redis.call('HSET', jobkey(id), 'error', err) end
  local done = (new == 'succeeded') and ':done:ok' or ':done:failed'
  redis.call('ZADD', P .. done, now, id)
  if new == 'dead' then total('dead') elseif new == 'cancelled' then total('cancelled') end
end

local function unlease(id, worker)
  redis.call('ZREM', P .. ':leases', id)
  if worker then redis.call('SREM', P .. ':worker:' .. worker, id) end
end

-- the holder check of complete/fail/progress: 'ok', 'notfound' or 'stale'; worker ''
-- skips the check of who holds the lease (the token alone decides)
local function holder(id, token, worker)
  local j = redis.call('HMGET', jobkey(id), 'state', 'attempts', 'worker')
  if not j[1] then return 'notfound' end
  if j[1] ~= 'running' or j[2] ~= token or (worker ~= '' and j[3] ~= worker) then
    return 'stale'
  end
  return 'ok'
end

-- a lease ended without an answer: queued again, dead (poison) or cancelled
local function lose(id, now, poison_limit)
  local j = redis.call('HMGET', jobkey(id), 'queue', 'worker', 'lost', 'cancel_requested')
  unlease(id, j[2])
  local lost = tonumber(j[3] or '0') + 1
  redis.call('HSET', jobkey(id), 'lost', lost)
  total('lost')
  if j[4] == '1' then
    finish(id, j[1], 'running', 'cancelled', now, nil)
  elseif lost > poison_limit then
    local msg = 'lease lost ' .. lost ..
      ' times without an answer: workers keep dying or freezing on this job'
    finish(id, j[1], 'running', 'dead', now,
      cjson.encode({kind = 'poison', message = msg, traceback = ''}))
  else
    requeue(id, 'running')
  end
end

-- The members of sorted set `key` scored at most `max`, in (score, numeric id)
-- order: a sorted set orders equal scores by the member's text ("10" before "9"),
-- and jobs due at the same instant must keep their submit order.
local function due_in_order(key, max)
  local flat = redis.call('ZRANGEBYSCORE', key, '-inf', max, 'WITHSCORES')
  local due = {}
  for i = 1, #flat, 2 do
    due[#due + 1] = {tonumber(flat[i + 1]), tonumber(flat[i]), flat[i]}
  end
  table.sort(due, function(a, b)
    if a[1] ~= b[1] then return a[1] < b[1] end
    return a[2] < b[2]
  end)
  local ids = {}
  for i, d in ipairs(due) do ids[i] = d[3] end
  return ids
end
