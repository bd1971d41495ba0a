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
--                            expire, retry) became queued (none: at its created_at)
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

-- a pair leaves P:pairs with its last ready job, so a claim never walks dead pairs
local function drop_ready(id, queue, type, prio)
  local pair = queue .. '\t' .. type
  local key = P .. ':ready:' .. pair
  redis.call('ZREM', key, id)
  if redis.call('ZCARD', key) == 0 then redis.call('SREM', P .. ':pairs', pair) end
  redis.call('HINCRBY', P .. ':prio', prio, -1)
end

-- queue a job again (at the back of its priority) at time now; old is its current state
local function requeue(id, old, now)
  local j = redis.call('HMGET', jobkey(id), 'queue', 'type', 'priority')
  redis.call('HSET', jobkey(id), 'cancel_requested', '0', 'queued_at', num(now))
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
  redis.call('ZREM', P .. ':leases', zid(id))
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
    requeue(id, 'running', now)
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
