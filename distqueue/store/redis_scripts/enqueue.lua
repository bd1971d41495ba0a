-- enqueue: ARGV now, specs (JSON array), guard, then the payloads of the specs with
-- has_payload, in order; then as many further enqueues made at once (the store groups
-- them: one script call for all) the same way: now, specs, guard, payloads.
-- guard: '' or a schedule's tick this enqueue fires (Store.fire_periodic), JSON
-- {name, tick, next_at}: the enqueue is done only when the schedule's next_at is
-- tick, and sets it to next_at.
-- -> one answer per enqueue, in order: {'ok', {{id, created 0/1, state}, ...}} (one
-- row per spec), {'invalid', message} or {'full', message} (nothing of that enqueue
-- stored), or {'skip'} (its guard's tick is not the schedule's next: nothing done).
-- The enqueues are done one after the other, as separate calls would be; each is
-- checked whole (unique keys, the jobs it waits for, max_depth) before any of it is
-- stored.
-- One HSET per new job (every field at once); the unique keys looked up in one HMGET
-- and the max_depth limits in another; ids taken with one INCRBY per enqueue, FIFO
-- places with a GET and an INCRBY; the indexes and counts flushed once. A spec with `after` costs an
-- HMGET per job it waits for (and an SCARD and an HSET for one not yet waited for);
-- a max_depth, the counts of its queue (one HMGET; all queues: one HGETALL).
local calls = {}
local a = 1
while a <= #ARGV do
  local c = {now = ARGV[a], specs = cjson.decode(ARGV[a + 1]), guard = ARGV[a + 2]}
  a = a + 3
  for _, s in ipairs(c.specs) do
    if s.has_payload then
      s.payload = ARGV[a]
      a = a + 1
    end
    if s.unique_key == cjson.null then s.unique_key = nil end
  end
  calls[#calls + 1] = c
end
-- the unique keys already taken, in one HMGET per CHUNK keys; and the max_depth of
-- every queue named, and of all queues ('*')
local taken = {}
local keys = {}
local queues, named = {'*'}, {['*'] = true}
for _, c in ipairs(calls) do
  for _, s in ipairs(c.specs) do
    if s.unique_key then keys[#keys + 1] = s.unique_key end
    if not named[s.queue] then
      named[s.queue] = true
      queues[#queues + 1] = s.queue
    end
  end
end
local ids = hmget_all(P .. ':unique', keys)
for k, key in ipairs(keys) do
  if ids[k] then taken[key] = ids[k] end
end
local depth = {} -- queue -> its max_depth (as stored)
local limited = false
for i, v in ipairs(hmget_all(P .. ':depth', queues)) do
  if v then
    depth[queues[i]] = v
    limited = true
  end
end
-- the unfinished jobs of a queue (or of all, '*'): read from P:counts once, plus
-- those this call made (P:counts changes at its end)
local UNFINISHED = {'waiting', 'scheduled', 'queued', 'running', 'retrying'}
local held, made = {}, {}
local function held_in(q)
  if held[q] == nil then
    local n = 0
    if q == '*' then
      local unfinished = {}
      for _, st in ipairs(UNFINISHED) do unfinished[st] = true end
      local flat = redis.call('HGETALL', P .. ':counts')
      for i = 1, #flat, 2 do
        if unfinished[string.match(flat[i], '\t([^\t]*)$')] then n = n + tonumber(flat[i + 1]) end
      end
    else
      local f = {}
      for i, st in ipairs(UNFINISHED) do f[i] = q .. '\t' .. st end
      for _, v in ipairs(redis.call('HMGET', P .. ':counts', unpack(f))) do
        n = n + tonumber(v or '0')
      end
    end
    held[q] = n
  end
  return held[q] + (made[q] or 0)
end
-- the jobs named by `after`: id -> {state, flagged (its hash's waiters), n (its
-- waiters, counted when needed)}
local deps = {}
local function dep(id)
  local d = deps[id]
  if d == nil then
    local v = redis.call('HMGET', jobkey(id), 'state', 'waiters')
    if not v[1] then return nil end -- (not remembered: a later enqueue may make it)
    d = {state = v[1], flagged = v[2] == '1'}
    deps[id] = d
  end
  return d
end
local function waiters_of(id, d)
  if d.n == nil then
    d.n = d.flagged and redis.call('SCARD', P .. ':waiters:' .. id) or 0
  end
  return d.n
end

local states = {} -- id -> state of the jobs made here
local unique = {}
local submitted = 0
local function enqueue(c)
  local now = c.now
  local guard = nil
  if c.guard ~= '' then
    guard = cjson.decode(c.guard)
    local at = redis.call('ZSCORE', P .. ':periodic:next', guard.name)
    if not at or tonumber(at) ~= tonumber(guard.tick) then return {'skip'} end
  end
  -- what each spec makes, checked before anything is stored
  local plan = {}
  local mine = {} -- unique key -> the spec of this enqueue that makes its job
  local adds = {} -- id -> the waiters this enqueue gives it
  local fresh, order = {}, {} -- queue -> unfinished jobs this enqueue makes
  local new, unfinished_new = 0, 0
  for i, s in ipairs(c.specs) do
    local p = {}
    local pending, failed = {}, false
    for _, id in ipairs(s.after or {}) do
      local d = dep(id)
      if not d then
        return {'invalid', string.format('job %d: it waits for job %s, which does not exist',
          i - 1, id)}
      end
      if d.state == 'dead' or d.state == 'cancelled' then
        if s.on_failure ~= 'run' then failed = true end
      elseif d.state ~= 'succeeded' then
        pending[#pending + 1] = id
      end
    end
    local key = s.unique_key
    if key and (taken[key] or mine[key]) then
      p.existing, p.same = taken[key], mine[key]
    else
      new = new + 1
      if key then mine[key] = i end
      local delayed = s.run_at ~= cjson.null and tonumber(s.run_at) > tonumber(now)
      if failed then
        p.state = 'cancelled'
      elseif #pending > 0 then
        p.state, p.pending = 'waiting', pending
        for _, id in ipairs(pending) do
          adds[id] = (adds[id] or 0) + 1
          if waiters_of(id, deps[id]) + adds[id] > MAX_WAITERS then
            return {'invalid', string.format(
              'job %d: job %s would have more than %d jobs waiting for it', i - 1, id,
              MAX_WAITERS)}
          end
        end
      else
        p.state = delayed and 'scheduled' or 'queued'
      end
      if p.state ~= 'cancelled' then
        if not fresh[s.queue] then
          fresh[s.queue] = 0
          order[#order + 1] = s.queue
        end
        fresh[s.queue] = fresh[s.queue] + 1
        unfinished_new = unfinished_new + 1
      end
    end
    plan[i] = p
  end
  if limited and unfinished_new > 0 then
    if depth['*'] then
      local n = held_in('*')
      if n + unfinished_new > tonumber(depth['*']) then
        return {'full', string.format('all queues hold %d jobs (max_depth %s)', n, depth['*'])}
      end
    end
    for _, q in ipairs(order) do
      if depth[q] then
        local n = held_in(q)
        if n + fresh[q] > tonumber(depth[q]) then
          return {'full', string.format('queue %s holds %d jobs (max_depth %s)', q, n, depth[q])}
        end
      end
    end
  end
  -- checked: stored
  local id = 0
  if new > 0 then id = redis.call('INCRBY', P .. ':next_id', new) - new end
  local rows, ids_of = {}, {}
  for i, s in ipairs(c.specs) do
    local p = plan[i]
    if p.state == nil then
      local existing = p.existing or ids_of[p.same]
      rows[i] = {tonumber(existing), 0, states[existing] or hget(existing, 'state')}
    else
      id = id + 1
      local sid = tostring(id)
      ids_of[i] = sid
      local state = p.state
      local f = {'type', s.type, 'queue', s.queue, 'priority', s.priority,
                 'max_retries', s.max_retries, 'attempts', 0, 'failures', 0, 'lost', 0,
                 'cancel_requested', 0, 'created_at', now, 'state', state}
      for _, name in ipairs({'timeout', 'deadline'}) do
        if s[name] ~= cjson.null then f[#f + 1] = name; f[#f + 1] = num(s[name]) end
      end
      if s.args ~= cjson.null then f[#f + 1] = 'args'; f[#f + 1] = s.args end
      if s.payload then f[#f + 1] = 'payload'; f[#f + 1] = s.payload end
      local key = s.unique_key
      if key then
        f[#f + 1] = 'unique_key'; f[#f + 1] = key
        unique[#unique + 1] = key
        unique[#unique + 1] = sid
        taken[key] = sid
      end
      if s.after then
        f[#f + 1] = 'after'; f[#f + 1] = s.after_json
        f[#f + 1] = 'on_failure'; f[#f + 1] = s.on_failure
        if s.pass_results then f[#f + 1] = 'pass_results'; f[#f + 1] = '1' end
      end
      if s.run_at ~= cjson.null and (state == 'scheduled' or state == 'waiting') then
        f[#f + 1] = 'run_at'; f[#f + 1] = num(s.run_at)
      end
      if state == 'scheduled' then
        schedule(sid, s, s.run_at)
      elseif state == 'queued' then
        f[#f + 1] = 'line'; f[#f + 1] = push_ready(sid, s.queue, s.type, s.priority, now)
      elseif state == 'waiting' then
        f[#f + 1] = 'deps'; f[#f + 1] = #p.pending
        for _, dep_id in ipairs(p.pending) do
          sadd(P .. ':waiters:' .. dep_id, sid)
          local d = deps[dep_id]
          if not d.flagged then
            redis.call('HSET', jobkey(dep_id), 'waiters', '1')
            d.flagged = true
          end
          d.n = waiters_of(dep_id, d) + 1
        end
      else -- cancelled: a job it waits for ended dead or cancelled
        f[#f + 1] = 'finished_at'; f[#f + 1] = now
        zadd(P .. ':done:failed', now, sid)
        total('cancelled')
      end
      redis.call('HSET', jobkey(sid), unpack(f))
      zadd(P .. ':all', sid, sid)
      move(sid, s.queue, nil, state)
      states[sid] = state
      if state ~= 'cancelled' then
        made[s.queue] = (made[s.queue] or 0) + 1
        made['*'] = (made['*'] or 0) + 1
      end
      rows[i] = {id, 1, state}
    end
  end
  submitted = submitted + new
  if guard then redis.call('ZADD', P .. ':periodic:next', guard.next_at, guard.name) end
  return {'ok', rows}
end

local out = {}
for _, c in ipairs(calls) do out[#out + 1] = enqueue(c) end
if #unique > 0 then send('HSET', P .. ':unique', unique, 2) end
if submitted > 0 then total('submitted', submitted) end
return reply(out)
