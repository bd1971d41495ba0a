-- distqueue Redis store: shared helpers, prepended to every script.
--
-- Key schema. KEYS[1] is the prefix with its hash tag, "{dq}" by default: every key
-- of one store shares that tag, so each script's keys live in one Cluster slot.
--   P:epoch                  random value made when the store was created (init.lua);
--                            its absence means Redis lost the store's data
--   P:format                 '4': the members of P:scheduled and P:leases are padded
--                            ('2' on), the ready jobs are in P:line ('3' on; before,
--                            P:ready:<pair> scored priority * 2^48 + seq: migrate.lua),
--                            the dead and the scheduled jobs of each queue are in
--                            P:dead and P:delayed ('4' on: migrate.lua builds them)
--   P:next_id                counter of job ids (never reused)
--   P:seq                    counter giving ready jobs their FIFO order (the last taken)
--   P:job:<id>               hash: every field of a job (strings; floats as %.17g),
--                            and queued_at: when a job queued again (promote, release,
--                            expire, retry) became queued (none: at its created_at).
--                            lease_until counts only while the job is running, run_at
--                            only while it is scheduled or retrying: they stay behind
--                            afterwards (read as none), so that ending or queueing a
--                            job costs no HDEL; so does line, its member of its pair's
--                            P:line while it is queued
--   P:line:<queue>\t<type>   zset of the queued jobs of that pair, in hand-out order:
--                            every score 0, each member line_member(priority, seq, id),
--                            which sorts bytewise as (priority, seq) - exact for any
--                            priority 0..2^32-1 and any seq (a double score is not:
--                            priority * 2^48 + seq loses the seq past priority 31)
--   P:queued_at              zset of the queued ids by when they became queued (their
--                            queued_at, else created_at): the oldest for stats
--   P:pairs                  set of "<queue>\t<type>" whose line is not empty
--   P:scheduled              zset of scheduled and retrying ids by run_at  (members
--   P:leases                 zset of running ids by lease_until             are zids)
--   P:delayed:<queue>        zset of the queue's scheduled and retrying ids by run_at,
--   P:delayed:<queue>\t<type> and of the pair's (members zids: ties by id), for kick
--                            and peek (schedule, unschedule)
--   P:dead:<queue>           zset of the queue's dead ids by finished_at, and of the
--   P:dead:<queue>\t<type>   pair's (members zids), for kick and peek (finish, unbury)
--   P:worker:<w>             set of the ids worker w holds
--   P:unique                 hash unique_key -> id
--   P:state:<state>          zset of ids in that state (score = id), for LIST
--   P:all                    zset of every id (score = id), for LIST
--   P:done:ok, P:done:failed zset of finished ids by finished_at, for PURGE
--   P:counts                 hash "<queue>\t<state>" -> jobs
--   P:prio                   hash priority -> queued jobs (only those with some: see flush)
--   P:totals                 hash of running totals (submitted, succeeded, ...)
--   P:types                  hash job type -> last time a worker declared it
--   P:workers                hash worker -> its info (JSON), the worker registry
--   P:workers:seen           zset of the registry's workers by when last noted
--   P:workers:ids            zset of the registry's workers, score 0 (by id, bytewise)
--
-- Dependencies (JobSpec.after). A job submitted after others also has, in its hash:
-- after (the ids as a JSON array), on_failure, pass_results ('1'), and while it is
-- waiting, deps: how many of them have not ended yet. Any job has waiters '1' while
-- P:waiters:<id> may hold ids (so a job without waiters costs no command to end).
--   P:waiters:<id>           set of the waiting jobs that wait for job id (at most
--                            MAX_WAITERS), deleted when it ends (see finish)
-- Flow control (Limit, pause; claims skip what is blocked, see claim.lua):
--   P:limits                 hash "<scope>\t<name>" -> the Limit as set (JSON)
--   P:depth                  hash queue (or '*', all queues) -> its max_depth
--   P:paused                 set of the paused queues
--   P:pause_until            zset of the paused queues whose pause ends, by that end
--                            (flow.lua 'resume_due' ends them; next_wakeup reads it)
--   P:flow                   hash "<scope>\t<name>" -> what claims check, "c r p b z":
--                            concurrency, rate, period, burst ('-': none), paused (1/0);
--                            no such key while no queue or type is limited or paused:
--                            a claim then checks nothing (one EXISTS)
--   P:running                hash job type -> its running jobs (those with tc '1' in
--                            their hash: counted by the claim that started them)
--   P:tokens                 hash "<scope>\t<name>" -> "<tokens> <at>", a rate's bucket
--                            (none: full)
--   P:parked:<why>           set of the pairs taken out of P:pairs because a scope blocks
--                            them; <why> is "pause\tqueue\t<q>", "conc\t<scope>\t<name>"
--                            (at its concurrency) or "rate\t<scope>\t<name>" (no token).
--                            Unparked (back into P:pairs) by what may unblock them: a
--                            running job of that scope stopping (conc), time (rate), a
--                            resume (pause), a new limit (conc, rate)
--   P:parked                 hash pair -> the <why> it is parked under, and "#<why>" -> 1
--                            while P:parked:<why> is not empty
--   P:unpark_at              zset of the rate <why>s by when their bucket has a token again
-- Periodic schedules (Periodic):
--   P:periodic               hash name -> its definition (Periodic.definition, JSON)
--   P:periodic:next          zset of the schedule names by next_at
--   P:periodic:paused        set of the paused schedules
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
-- the score of a ready job before P:format 3 was priority * PRIO_SHIFT + seq (migrate.lua)
local PRIO_SHIFT = 281474976710656 -- 2^48
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
-- A queued job's member of P:line:<pair>: its priority (8 hex digits) and seq (14: any
-- seq a Lua number holds exactly), fixed width and big-endian, so members sort bytewise
-- (as Redis sorts equal scores) by (priority, seq); then its id. line_key gives back
-- the (priority, seq) numbers to compare (Lua's string < follows the locale), line_id
-- the id.
local function line_member(prio, seq, id) return string.format('%08x%014x', prio, seq) .. id end
local function line_key(member)
  return tonumber(string.sub(member, 1, 8), 16), tonumber(string.sub(member, 9, 22), 16)
end
local function line_id(member) return string.sub(member, 23) end
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
local readied = {} -- {pair, priority, member, id, queued at} of the jobs made ready
local last_seq = nil -- the seq the last job made ready took (P:seq read at the first)
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
local function hset(key, field, value)
  local t = args_of('HSET', key)
  t[#t + 1] = field
  t[#t + 1] = value
end
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
-- the two index keys of a job (j: queue and type at least) of kind 'dead' or
-- 'delayed': its queue's and its pair's (see above)
local function by_queue(kind, j)
  local key = P .. ':' .. kind .. ':' .. j.queue
  return key, key .. '\t' .. j.type
end
local function index_add(kind, j, id, score)
  local q, pair = by_queue(kind, j)
  zadd(q, score, zid(id))
  zadd(pair, score, zid(id))
end
local function index_rem(kind, j, id)
  local q, pair = by_queue(kind, j)
  zrem(q, zid(id))
  zrem(pair, zid(id))
end
-- a job (j: queue and type) becomes scheduled or retrying until run_at / stops being so:
-- P:scheduled (promote) and its queue's and pair's P:delayed (kick, peek); its hash
-- and state index are the caller's
local function schedule(id, j, run_at)
  zadd(P .. ':scheduled', run_at, zid(id))
  index_add('delayed', j, id, run_at)
end
local function unschedule(id, j)
  zrem(P .. ':scheduled', zid(id))
  index_rem('delayed', j, id)
end
-- a queued job (j: its hash) out of its line (its member: field line), its pair out
-- of P:pairs with its last ready job, out of the priority and queued-at counts
local function unqueue(id, j)
  local pair = j.queue .. '\t' .. j.type
  local key = P .. ':line:' .. pair
  if j.line then
    redis.call('ZREM', key, j.line)
  else -- queued by a version before P:format 3 after the store's migration
    redis.call('ZREM', P .. ':ready:' .. pair, id)
  end
  if redis.call('ZCARD', key) == 0 then srem(P .. ':pairs', pair) end
  incr(P .. ':prio', j.priority, -1)
  zrem(P .. ':queued_at', id)
end
-- a dead job (j: queue and type) leaves its queue's and pair's P:dead (finish adds it)
local function unbury(id, j) index_rem('dead', j, id) end

-- into its pair's P:line at the back of its priority, queued at `now`: returns its
-- member, for the caller to write into its hash (field line) with its other fields.
-- The first job a call makes ready reads P:seq (one GET); flush adds what it took.
local function push_ready(id, queue, type, prio, now)
  if last_seq == nil then last_seq = tonumber(redis.call('GET', P .. ':seq') or '0') end
  last_seq = last_seq + 1
  local member = line_member(tonumber(prio), last_seq, id)
  readied[#readied + 1] = {queue .. '\t' .. type, tostring(prio), member, id, now}
  return member
end

local function send(cmd, key, args, step)
  for i = 1, #args, CHUNK * step do
    redis.call(cmd, key, unpack(args, i, math.min(#args, i + CHUNK * step - 1)))
  end
end
-- HMGET of any number of fields (CHUNK per command): the values, in order
local function hmget_all(key, names)
  local out = {}
  for i = 1, #names, CHUNK do
    local values = redis.call('HMGET', key, unpack(names, i, math.min(#names, i + CHUNK - 1)))
    for k, v in ipairs(values) do out[i + k - 1] = v end
  end
  return out
end

-- Parking (P:parked, see above). A pair is parked by the claim that finds it blocked
-- (park queues the change, flushed with the rest); unpark puts every pair of one <why>
-- back into P:pairs at once (at once: SMEMBERS, SADD, HDEL, DEL), for the next claim to
-- look at: one that is still blocked, by that or another scope, is parked again.
local parking = {} -- pairs parked by this call (P:parked does not show them yet)
local stopped = {} -- "conc\t<scope>\t<name>" of the running jobs this call stopped
local function park(pair, why, at)
  srem(P .. ':pairs', pair)
  sadd(P .. ':parked:' .. why, pair)
  hset(P .. ':parked', pair, why)
  hset(P .. ':parked', '#' .. why, '1')
  if at then zadd(P .. ':unpark_at', num(at), why) end
  parking[pair] = true
end
local function unpark(why)
  local key = P .. ':parked:' .. why
  local members = redis.call('SMEMBERS', key)
  if #members > 0 then
    send('SADD', P .. ':pairs', members, 1)
    redis.call('DEL', key)
  end
  members[#members + 1] = '#' .. why
  send('HDEL', P .. ':parked', members, 1)
  if string.sub(why, 1, 5) == 'rate\t' then redis.call('ZREM', P .. ':unpark_at', why) end
end
-- the rate <why>s whose bucket has a token again at `now` unparked (at most 100 of
-- them, the earliest; the next call takes the rest): one ZRANGEBYSCORE. Returns how many.
local function unpark_due(now)
  local due = redis.call('ZRANGEBYSCORE', P .. ':unpark_at', '-inf', now, 'LIMIT', 0, 100)
  for _, why in ipairs(due) do unpark(why) end
  return #due
end

local function flush()
  if #readied > 0 then
    redis.call('INCRBY', P .. ':seq', #readied)
    last_seq = nil
    local made, seen = {}, {}
    for _, r in ipairs(readied) do
      zadd(P .. ':line:' .. r[1], 0, r[3])
      zadd(P .. ':queued_at', r[5], r[4])
      incr(P .. ':prio', r[2], 1)
      if not seen[r[1]] then
        seen[r[1]] = true
        made[#made + 1] = r[1]
      end
    end
    readied = {}
    -- into P:pairs, unless parked: its unpark puts it back (one HMGET for all)
    local where = hmget_all(P .. ':parked', made)
    for i, pair in ipairs(made) do
      if not where[i] and not parking[pair] then sadd(P .. ':pairs', pair) end
    end
  end
  for _, pass in ipairs({{ZREM = 1, SREM = 1, HDEL = 1}, {ZADD = 2, SADD = 1, HSET = 2}}) do
    for _, q in ipairs(order) do
      local step = pass[q[1]]
      if step and #q[3] > 0 then send(q[1], q[2], q[3], step) end
    end
  end
  queued, order = {}, {}
  -- the counters, per key: one HINCRBY per field, or for many fields (P:prio, when
  -- the jobs of a call have many priorities) one HMGET and one HSET for all of them;
  -- a priority whose count falls to 0 leaves P:prio (one HDEL), which so holds only
  -- the priorities with queued jobs, never every priority once used
  local by_key, key_order = {}, {}
  for _, c in ipairs(counter_order) do
    if c[3] ~= 0 then
      local list = by_key[c[1]]
      if not list then
        list = {}
        by_key[c[1]] = list
        key_order[#key_order + 1] = c[1]
      end
      list[#list + 1] = c
    end
  end
  counters, counter_order = {}, {}
  local prio_key = P .. ':prio'
  for _, key in ipairs(key_order) do
    local list, gone = by_key[key], {}
    local prune = key == prio_key
    if #list <= 2 then
      for _, c in ipairs(list) do
        local v = redis.call('HINCRBY', key, c[2], c[3])
        if prune and v == 0 then gone[#gone + 1] = c[2] end
      end
    else
      local names, set = {}, {}
      for i, c in ipairs(list) do names[i] = c[2] end
      local values = hmget_all(key, names)
      for i, c in ipairs(list) do
        local v = tonumber(values[i] or '0') + c[3]
        if prune and v == 0 then
          gone[#gone + 1] = c[2]
        else
          set[#set + 1] = c[2]
          set[#set + 1] = v
        end
      end
      if #set > 0 then send('HSET', key, set, 2) end
    end
    if #gone > 0 then send('HDEL', key, gone, 1) end
  end
  -- running jobs stopped: the pairs their queue's or type's concurrency parked may go
  -- (one HMGET for all)
  local whys = {}
  for why in pairs(stopped) do whys[#whys + 1] = '#' .. why end
  stopped = {}
  if #whys > 0 then
    local flags = hmget_all(P .. ':parked', whys)
    for i, flag in ipairs(whys) do
      if flags[i] then unpark(string.sub(flag, 2)) end
    end
  end
end
-- the answer of a script that changed something: its queued changes sent first
local function reply(answer)
  flush()
  return answer
end

-- queue job id again (at the back of its priority) at time now; old is its current
-- state, j its fields (queue, type, priority at least), set more fields to write with
-- it (state, cancel_requested, queued_at and line are added)
local function requeue(id, j, old, now, set)
  set = set or {}
  set[#set + 1] = 'state'; set[#set + 1] = 'queued'
  set[#set + 1] = 'cancel_requested'; set[#set + 1] = '0'
  set[#set + 1] = 'queued_at'; set[#set + 1] = num(now)
  set[#set + 1] = 'line'; set[#set + 1] = push_ready(id, j.queue, j.type, j.priority, now)
  redis.call('HSET', jobkey(id), unpack(set))
  move(id, j.queue, old, 'queued')
end

-- a waiting job (or one cancelled while waiting) out of the waiter sets of the jobs it
-- waits for (after: its JSON array of ids)
local function unwait(id, after)
  if after then
    for dep in string.gmatch(after, '%d+') do srem(P .. ':waiters:' .. dep, id) end
  end
end

-- The jobs waiting for job id, which just ended in state `ended` (at time now), move on:
-- one that ended dead or cancelled cancels its waiters of on_failure 'cancel' at once
-- (and their own waiters in turn); otherwise each waiter counts it done, and the last
-- one done queues it (or schedules it, its run_at ahead). Bounded: at most MAX_WAITERS
-- waiters a job; a cascade goes down the chains of waiting jobs, each job once (its
-- waiter set is deleted as it is read). Commands: per ended job with waiters one
-- SMEMBERS and one DEL; per waiter one HMGET and one HSET (the indexes queued).
local function release_waiters(id, ended, now)
  local work = {{id, ended}}
  local k = 1
  while k <= #work do
    local jid, state = work[k][1], work[k][2]
    k = k + 1
    local key = P .. ':waiters:' .. jid
    local ws = redis.call('SMEMBERS', key)
    redis.call('DEL', key)
    table.sort(ws, function(x, y) return tonumber(x) < tonumber(y) end) -- FIFO by id
    for _, w in ipairs(ws) do
      local j = hmget(w, 'state', 'deps', 'on_failure', 'queue', 'type', 'priority', 'run_at',
        'waiters', 'after')
      if j.state == 'waiting' then
        if state ~= 'succeeded' and j.on_failure ~= 'run' then
          unwait(w, j.after) -- out of the sets of the jobs it waited for that still run
          local set = {'state', 'cancelled', 'finished_at', num(now), 'deps', '0'}
          if j.waiters == '1' then
            set[#set + 1] = 'waiters'; set[#set + 1] = '0'
            work[#work + 1] = {w, 'cancelled'}
          end
          redis.call('HSET', jobkey(w), unpack(set))
          move(w, j.queue, 'waiting', 'cancelled')
          zadd(P .. ':done:failed', now, w)
          total('cancelled')
        else
          local deps = tonumber(j.deps or '1') - 1
          if deps > 0 then
            redis.call('HSET', jobkey(w), 'deps', deps)
          elseif j.run_at and tonumber(j.run_at) > now then
            redis.call('HSET', jobkey(w), 'deps', '0', 'state', 'scheduled')
            move(w, j.queue, 'waiting', 'scheduled')
            schedule(w, j, j.run_at)
          else
            redis.call('HSET', jobkey(w), 'deps', '0', 'state', 'queued', 'queued_at', num(now),
              'line', push_ready(w, j.queue, j.type, j.priority, now))
            move(w, j.queue, 'waiting', 'queued')
          end
        end
      end
    end
  end
end

-- end job id (j: its fields, queue and waiters at least; type too when it dies) in
-- state new at time now; set: more fields to write with it (state and finished_at are
-- added). A dead job goes into its queue's and pair's P:dead. The jobs waiting for
-- it move on (release_waiters) when it has any.
local function finish(id, j, old, new, now, set)
  set = set or {}
  set[#set + 1] = 'state'; set[#set + 1] = new
  set[#set + 1] = 'finished_at'; set[#set + 1] = num(now)
  if j.waiters == '1' then set[#set + 1] = 'waiters'; set[#set + 1] = '0' end
  redis.call('HSET', jobkey(id), unpack(set))
  move(id, j.queue, old, new)
  zadd(P .. ((new == 'succeeded') and ':done:ok' or ':done:failed'), now, id)
  if new == 'dead' then
    total('dead')
    index_add('dead', j, id, now)
  elseif new == 'cancelled' then
    total('cancelled')
  end
  if j.waiters == '1' then release_waiters(id, new, tonumber(now)) end
end

-- a dead or cancelled job (j: its fields state, queue, type, priority, finished_at)
-- queued again at time now, its failures and lost reset (retry, kick, kick_job)
local function revive(id, j, now)
  zrem(P .. ':done:failed', id)
  if j.state == 'dead' then unbury(id, j) end
  if j.finished_at then redis.call('HDEL', jobkey(id), 'finished_at') end
  requeue(id, j, j.state, now, {'failures', 0, 'lost', 0})
  total('retried')
end

-- a running job stops (j: its fields worker, queue, type and tc): off the leases and
-- its worker's set, out of its type's running count; its queue's and type's pairs
-- parked at their concurrency limit may go again (checked by flush)
local function unlease(id, j)
  zrem(P .. ':leases', zid(id))
  if j.worker then srem(P .. ':worker:' .. j.worker, id) end
  if j.tc == '1' then incr(P .. ':running', j.type, -1) end
  if j.queue then stopped['conc\tqueue\t' .. j.queue] = true end
  if j.type then stopped['conc\ttype\t' .. j.type] = true end
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
  local j = hmget(id, 'queue', 'type', 'priority', 'worker', 'lost', 'cancel_requested', 'tc',
    'waiters')
  unlease(id, j)
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
