-- distqueue Redis store: shared helpers, prepended to every script.
--
-- Key schema. KEYS[1] is the prefix with its hash tag, "{dq}" by default: every key
-- of one store shares that tag, so each script's keys live in one Cluster slot.
--   P:epoch                  random value made when the store was created (init.lua);
--                            its absence means Redis lost the store's data
--   P:format                 '2': the members of P:scheduled and P:leases are padded
--   P:next_id                counter of job ids (never reused)
--   P:seq                    counter giving ready jobs their FIFO order
--   P:job:<id>               hash: every field of a job (strings; floats as %.17g),
--                            and queued_at: when a job queued again (promote, release,
--                            expire, retry) became queued (none: at its created_at).
--                            lease_until counts only while the job is running, run_at
--                            only while it is scheduled or retrying: they stay behind
--                            afterwards (read as none), so that ending or queueing a
--                            job costs no HDEL
--   P:ready:<queue>\t<type>  zset of queued ids, score priority * 2^48 + seq
--   P:pairs                  set of "<queue>\t<type>" whose ready zset is not empty
--   P:scheduled              zset of scheduled and retrying ids by run_at  (members
--   P:leases                 zset of running ids by lease_until             are zids)
--   P:worker:<w>             set of the ids worker w holds
--   P:unique                 hash unique_key -> id
--   P:state:<state>          zset of ids in that state (score = id), for LIST
--   P:all                    zset of every id (score = id), for LIST
--   P:done:ok, P:done:failed zset of finished ids by finished_at, for PURGE
--   P:counts                 hash "<queue>\t<state>" -> jobs
--   P:prio                   hash priority -> queued jobs
--   P:totals                 hash of running totals (submitted, succeeded, ...)
--   P:types                  hash job type -> last time a worker declared it
--   P:workers                hash worker -> its info (JSON), the worker registry
--   P:workers:seen           zset of the registry's workers by when last noted
--   P:workers:ids            zset of the registry's workers, score 0 (by id, bytewise)
--
-- Every script does bounded work: at most the n, the batch or the ids it is given.
-- ARGV[1] of every script is the epoch its caller opened the store with; it is taken
-- off ARGV here, so each script's own arguments start at ARGV[1]. A script whose
-- epoch is not the store's changes nothing and answers the error 'DQEPOCH <the
-- store's epoch, empty when it is gone>'.
--
-- Few commands per job. Redis counts (and spends its time on) every command a script
-- runs, so a script touches a job's hash once or twice (one HMGET or HGETALL, one
-- HSET with every field it changes) and queues every index and counter change below
-- (zadd, zrem, sadd, srem, hdel, incr, push_ready); flush(), which every script that
-- changes something calls last (through reply()), sends them as one variadic command
-- per key (ZADD P:state:running with every job a claim leased, one HINCRBY per
-- counter), so they cost per call, not per job. A script reads what it queued only
-- through the job hashes, which are written at once: it never reads an index it
-- changed, and never removes a member it added in the same call (flush sends the
-- removals of a key before its additions).
local P = KEYS[1]
local EPOCH = table.remove(ARGV, 1)
local PRIO_SHIFT = 281474976710656 -- 2^48: priority outranks any seq
do
  local current = redis.call('GET', P .. ':epoch')
  if current ~= EPOCH then return redis.error_reply('DQEPOCH ' .. (current or '')) end
end

local function num(x) return string.format('%.17g', x) end
-- an id as a member of P:scheduled and P:leases: zero-padded to 20 digits, so that
-- members with equal scores (due at the same instant) sort by id, "9" before "10"
local function zid(id) return string.format('%020d', tonumber(id)) end
-- the id of such a member (also takes an id that is not padded)
local function unzid(member) return string.match(member, '^0*(%d+)$') end
local function jobkey(id) return P .. ':job:' .. id end
local function hget(id, f) return redis.call('HGET', jobkey(id), f) end
-- a job's fields as a table (HGETALL's answer, or HMGET's with its field names)
local function fields(flat)
  local t = {}
  for i = 1, #flat, 2 do t[flat[i]] = flat[i + 1] end
  return t
end
local function hmget(id, ...)
  local names = {...}
  local values = redis.call('HMGET', jobkey(id), ...)
  local t = {}
  for i, name in ipairs(names) do t[name] = values[i] or nil end
  return t
end

-- the queued changes of indexes and counters (see above), sent by flush()
local CHUNK = 1000 -- members per command at most (unpack has a limit)
local queued = {}  -- {command, key} -> args; in the order first queued
local order = {}
local counters, counter_order = {}, {}
local readied = {} -- {pair, priority, id} of jobs made ready, in FIFO order
local function args_of(cmd, key)
  local slot = cmd .. ' ' .. key
  local t = queued[slot]
  if not t then
    t = {}
    queued[slot] = t
    order[#order + 1] = {cmd, key, t}
  end
  return t
end
local function zadd(key, score, member)
  local t = args_of('ZADD', key)
  t[#t + 1] = score
  t[#t + 1] = member
end
local function zrem(key, member) local t = args_of('ZREM', key); t[#t + 1] = member end
local function sadd(key, member) local t = args_of('SADD', key); t[#t + 1] = member end
local function srem(key, member) local t = args_of('SREM', key); t[#t + 1] = member end
local function hdel(key, field) local t = args_of('HDEL', key); t[#t + 1] = field end
local function incr(key, field, n)
  local slot = key .. '\0' .. field
  local c = counters[slot]
  if not c then
    c = {key, field, 0}
    counters[slot] = c
    counter_order[#counter_order + 1] = c
  end
  c[3] = c[3] + (n or 1)
end

local function total(key, n) incr(P .. ':totals', key, n) end
local function count(queue, old, new)
  if old then incr(P .. ':counts', queue .. '\t' .. old, -1) end
  if new then incr(P .. ':counts', queue .. '\t' .. new, 1) end
end
-- a job changes state in the per-state index and the counts; its hash's 'state'
-- field is the caller's to write (with the job's other fields, in one HSET)
local function move(id, queue, old, new)
  if old then zrem(P .. ':state:' .. old, id) end
  zadd(P .. ':state:' .. new, id, id)
  count(queue, old, new)
end
-- into its ready zset at the back of its priority (its seq is given by flush)
local function push_ready(id, queue, type, prio)
  readied[#readied + 1] = {queue .. '\t' .. type, tostring(prio), id}
end

local function send(cmd, key, args, step)
  for i = 1, #args, CHUNK * step do
    redis.call(cmd, key, unpack(args, i, math.min(#args, i + CHUNK * step - 1)))
  end
end
local function flush()
  if #readied > 0 then
    local seq = redis.call('INCRBY', P .. ':seq', #readied) - #readied
    for i, r in ipairs(readied) do
      zadd(P .. ':ready:' .. r[1], tonumber(r[2]) * PRIO_SHIFT + seq + i, r[3])
      sadd(P .. ':pairs', r[1])
      incr(P .. ':prio', r[2], 1)
    end
    readied = {}
  end
  for _, pass in ipairs({{ZREM = 1, SREM = 1, HDEL = 1}, {ZADD = 2, SADD = 1}}) do
    for _, q in ipairs(order) do
      local step = pass[q[1]]
      if step and #q[3] > 0 then send(q[1], q[2], q[3], step) end
    end
  end
  queued, order = {}, {}
  for _, c in ipairs(counter_order) do
    if c[3] ~= 0 then redis.call('HINCRBY', c[1], c[2], c[3]) end
  end
  counters, counter_order = {}, {}
end
-- the answer of a script that changed something: its queued changes sent first
local function reply(answer)
  flush()
  return answer
end

-- queue job id again (at the back of its priority) at time now; old is its current
-- state, j its fields (queue, type, priority at least), set more fields to write with
-- it (state, cancel_requested and queued_at are added)
local function requeue(id, j, old, now, set)
  set = set or {}
  set[#set + 1] = 'state'; set[#set + 1] = 'queued'
  set[#set + 1] = 'cancel_requested'; set[#set + 1] = '0'
  set[#set + 1] = 'queued_at'; set[#set + 1] = num(now)
  redis.call('HSET', jobkey(id), unpack(set))
  move(id, j.queue, old, 'queued')
  push_ready(id, j.queue, j.type, j.priority)
end

-- end job id (j: its fields, queue at least) in state new at time now; set: more
-- fields to write with it (state and finished_at are added)
local function finish(id, j, old, new, now, set)
  set = set or {}
  set[#set + 1] = 'state'; set[#set + 1] = new
  set[#set + 1] = 'finished_at'; set[#set + 1] = num(now)
  redis.call('HSET', jobkey(id), unpack(set))
  move(id, j.queue, old, new)
  zadd(P .. ((new == 'succeeded') and ':done:ok' or ':done:failed'), now, id)
  if new == 'dead' then total('dead') elseif new == 'cancelled' then total('cancelled') end
end

local function unlease(id, worker)
  zrem(P .. ':leases', zid(id))
  if worker then srem(P .. ':worker:' .. worker, id) end
end

-- the holder check of complete/fail/progress: 'ok', 'notfound' or 'stale', and the
-- job's fields (state, attempts, worker and those named); worker '' skips the check
-- of who holds the lease (the token alone decides)
local function holder(id, token, worker, ...)
  local j = hmget(id, 'state', 'attempts', 'worker', ...)
  if not j.state then return 'notfound', j end
  if j.state ~= 'running' or j.attempts ~= token or (worker ~= '' and j.worker ~= worker) then
    return 'stale', j
  end
  return 'ok', j
end

-- a lease ended without an answer: queued again, dead (poison) or cancelled
local function lose(id, now, poison_limit)
  local j = hmget(id, 'queue', 'type', 'priority', 'worker', 'lost', 'cancel_requested')
  unlease(id, j.worker)
  local lost = tonumber(j.lost or '0') + 1
  total('lost')
  if j.cancel_requested == '1' then
    finish(id, j, 'running', 'cancelled', now, {'lost', lost})
  elseif lost > poison_limit then
    local msg = 'lease lost ' .. lost ..
      ' times without an answer: workers keep dying or freezing on this job'
    finish(id, j, 'running', 'dead', now, {'lost', lost,
      'error', cjson.encode({kind = 'poison', message = msg, traceback = ''})})
  else
    requeue(id, j, 'running', now, {'lost', lost})
  end
end

-- The ids of at most `batch` members of sorted set `key` (P:scheduled or P:leases)
-- scored at most `max`, in (score, numeric id) order: the members are zids, so the
-- sorted set itself orders equal scores by id, and a batch boundary that falls among
-- jobs due at the same instant leaves the rest, in id order, to the next batch.
local function due_in_order(key, max, batch)
  local ids = redis.call('ZRANGEBYSCORE', key, '-inf', max, 'LIMIT', 0, batch)
  for i, member in ipairs(ids) do ids[i] = unzid(member) end
  return ids
end
