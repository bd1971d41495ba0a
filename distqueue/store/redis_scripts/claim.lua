-- claim: ARGV worker, n, now, lease_until, queues (JSON array or null), types (same),
-- max_bytes ('' = no byte limit), taken ('1': earlier calls of this claim took jobs),
-- then for each further claim of the same queues and types made at once (the store
-- groups them: one script call for all): worker, n, now, lease_until, max_bytes, taken
-- -> {{id, attempts, size, {field, value, ...}, claim}, ...} in hand-out order: each
-- job whole (as HGETALL gives it, as it is after the claim), and the number of the
-- claim (1, 2, ...) it went to. The claims are served one after the other, in order,
-- as separate calls would be. Jobs past their deadline become dead.
-- The most urgent job of the pairs it serves first: their lines' heads compared by
-- (priority, seq), exactly, whatever the priorities (0..2^32-1).
-- Walks only live (queue, type) pairs: P:pairs holds those with ready jobs, and a
-- worker naming both its queues and its types looks at just those combinations
-- (whichever of the two is smaller). At most EXPIRED_MAX jobs past their deadline
-- (and stale members of a line) are ended by one call (a claim may then hand out fewer than n: the next one goes on).
-- A job's size is its args + payload; with max_bytes, a claim stops before the
-- job that would take its total past it (unless it would be the claim's first job),
-- leaving that job untouched at the head of its line.
-- Flow control (P:flow, see _lib.lua): no job of a pair whose queue is paused, or
-- whose queue or type is at its concurrency or out of rate tokens, is handed out; the
-- pairs taken from P:pairs that are blocked are parked (out of P:pairs, so later claims
-- do not look at them) until what blocks them may have passed. Without P:flow (no
-- limit, no pause) this costs one EXISTS; with it, one HMGET of the candidates' flow
-- records and one of the running counts and buckets of those limited, and the rate
-- buckets written back in one HSET.
-- Commands: per job one HGETALL and one HSET (and an HDEL of a progress report);
-- per pair it looks at, one ZRANGE per CHUNK_MIN..n jobs read from its head and one
-- ZREMRANGEBYRANK of those taken; the indexes (P:queued_at too) and counts once per
-- call.
local EXPIRED_MAX = 1000
local CHUNK_MIN = 16
-- a bucket holding 1 - EPSILON tokens has one (time in floating point)
local EPSILON = 1e-9
local function request(worker, n, now, lease_until, room, taken)
  return {worker = worker, n = tonumber(n), now = now, lease_until = lease_until,
          room = tonumber(room), taken = taken == '1'}
end
local requests = {request(ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[7], ARGV[8])}
for i = 9, #ARGV, 6 do
  requests[#requests + 1] = request(ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3],
    ARGV[i + 4], ARGV[i + 5])
end
local n = 0 -- jobs asked for in all
for _, r in ipairs(requests) do n = n + r.n end
local flow = redis.call('EXISTS', P .. ':flow') == 1
if flow then unpark_due(requests[1].now) end -- (before P:pairs is read)
local queues, types = cjson.decode(ARGV[5]), cjson.decode(ARGV[6])
local function set_of(list)
  if list == cjson.null then return nil end
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end
local qs, ts = set_of(queues), set_of(types)
local candidates = {}
local from_pairs = true
if qs and ts and #queues * #types <= redis.call('SCARD', P .. ':pairs') then
  from_pairs = false
  for _, q in ipairs(queues) do
    for _, t in ipairs(types) do candidates[#candidates + 1] = q .. '\t' .. t end
  end
else
  for _, pair in ipairs(redis.call('SMEMBERS', P .. ':pairs')) do
    local tab = string.find(pair, '\t', 1, true)
    local q, t = string.sub(pair, 1, tab - 1), string.sub(pair, tab + 1)
    if (qs == nil or qs[q]) and (ts == nil or ts[t]) then candidates[#candidates + 1] = pair end
  end
end

-- The limits of the candidates' queues and types (flow control): scope "queue\t<q>" or
-- "type\t<t>" -> {key, c, r, p, b, z (see P:flow), run: its running jobs, tokens and at:
-- its bucket}; limited[pair] = {its queue's, its type's} (either may be nil), for the
-- pairs with any.
local limited = {}
if flow then
  local names, seen_scope, scopes = {}, {}, {}
  for _, pair in ipairs(candidates) do
    local tab = string.find(pair, '\t', 1, true)
    local two = {'queue\t' .. string.sub(pair, 1, tab - 1), 'type\t' .. string.sub(pair, tab + 1)}
    scopes[pair] = two
    for _, s in ipairs(two) do
      if not seen_scope[s] then
        seen_scope[s] = true
        names[#names + 1] = s
      end
    end
  end
  local records = hmget_all(P .. ':flow', names)
  local lim = {}
  local runq, runt, rated = {}, {}, {}
  for i, s in ipairs(names) do
    if records[i] then
      local c, r, p, b, z = string.match(records[i], '^(%S+) (%S+) (%S+) (%S+) (%S+)$')
      local L = {key = s, c = tonumber(c), r = tonumber(r), p = tonumber(p), b = tonumber(b),
                 z = z == '1', run = 0}
      lim[s] = L
      if L.c then
        if string.sub(s, 1, 6) == 'queue\t' then
          runq[#runq + 1] = L
        else
          runt[#runt + 1] = L
        end
      end
      if L.r then rated[#rated + 1] = L end
    end
  end
  local function read(key, list, field_of, set)
    if #list == 0 then return end
    local f = {}
    for i, L in ipairs(list) do f[i] = field_of(L) end
    local values = hmget_all(key, f)
    for i, L in ipairs(list) do set(L, values[i]) end
  end
  read(P .. ':counts', runq, function(L) return string.sub(L.key, 7) .. '\trunning' end,
    function(L, v) L.run = tonumber(v or '0') end)
  read(P .. ':running', runt, function(L) return string.sub(L.key, 6) end,
    function(L, v) L.run = tonumber(v or '0') end)
  read(P .. ':tokens', rated, function(L) return L.key end, function(L, v)
    if v then
      local tokens, at = string.match(v, '^(%S+) (%S+)$')
      L.tokens, L.at = tonumber(tokens), tonumber(at)
    else
      L.tokens = L.b -- a new limit's bucket is full
    end
  end)
  for _, pair in ipairs(candidates) do
    local q, t = lim[scopes[pair][1]], lim[scopes[pair][2]]
    if q or t then limited[pair] = {q, t} end
  end
end
-- a bucket filled up to `now`
local function refill(L, now)
  if L.at == nil then
    L.at = now
  elseif now > L.at then
    L.tokens = math.min(L.b, L.tokens + (now - L.at) * L.r / L.p)
    L.at = now
  end
end
-- what keeps a pair from giving a job at `now`: the <why> of P:parked:<why>, and for
-- a rate the time its bucket has a token again; nil when nothing does
local function blocked(pair, now)
  local two = limited[pair]
  if not two then return nil end
  local q, t = two[1], two[2]
  if q and q.z then return 'pause\t' .. q.key end
  if q and q.c and q.run >= q.c then return 'conc\t' .. q.key end
  if t and t.c and t.run >= t.c then return 'conc\t' .. t.key end
  for _, L in ipairs({q or false, t or false}) do
    if L and L.r then
      refill(L, now)
      if L.tokens < 1 - EPSILON then
        return 'rate\t' .. L.key, L.at + (1 - L.tokens) * L.p / L.r
      end
    end
  end
  return nil
end

-- each candidate's line (P:line), read from its head a chunk at a time: h.members
-- holds ranks h.first .. h.read - 1, h.prios and h.seqs their (priority, seq); h.pos
-- is the rank of its head now
local function fill(h, size)
  -- one more than asked: when it is not there, the line ends with these
  local got = redis.call('ZRANGE', h.key, h.read, h.read + size)
  h.members, h.prios, h.seqs, h.first = got, {}, {}, h.read
  for i, member in ipairs(got) do h.prios[i], h.seqs[i] = line_key(member) end
  h.read = h.read + #got
  h.last = #got <= size
end
local claimed = 0
-- its head's member, priority and seq, reading on when its chunk is used up
local function head(h)
  local i = h.pos - h.first + 1
  if h.members[i] == nil and not h.last then
    fill(h, math.max(CHUNK_MIN, n - claimed))
    i = 1
  end
  return h.members[i], h.prios[i], h.seqs[i]
end
local heads, seen = {}, {}
local first = #candidates == 1 and n or math.min(n, CHUNK_MIN)
local start = tonumber(requests[1].now)
for _, pair in ipairs(candidates) do
  if not seen[pair] then
    seen[pair] = true
    local why, at = blocked(pair, start)
    if why then
      -- not read; parked when it came from P:pairs (a pair a worker names may be
      -- parked already, or empty)
      if from_pairs then park(pair, why, at) end
    else
      local h = {pair = pair, key = P .. ':line:' .. pair, read = 0, pos = 0}
      fill(h, first)
      if h.members[1] then
        heads[#heads + 1] = h
      elseif from_pairs then
        srem(P .. ':pairs', pair) -- a dead pair left by an earlier version
      end
    end
  end
end
local out = {}
local expired = 0
local tokens_taken = {} -- the buckets to write back
local now = start
for number, r in ipairs(requests) do
  local mine, room = 0, r.room
  now = tonumber(r.now)
  while mine < r.n and expired < EXPIRED_MAX do
    -- the most urgent head of all: the lowest (priority, seq), compared exactly
    local best, best_member, best_prio, best_seq = nil, nil, nil, nil
    for _, h in ipairs(heads) do
      local member, prio, seq = head(h)
      if member and (best == nil or prio < best_prio or (prio == best_prio and seq < best_seq))
        and not blocked(h.pair, now) then
        best, best_member, best_prio, best_seq = h, member, prio, seq
      end
    end
    if best == nil then break end
    local id = line_id(best_member)
    local j = fields(redis.call('HGETALL', jobkey(id)))
    -- a member that is not the job's own (no such job, or one not queued there: data
    -- of a crashed earlier version?) is dropped from the line, nothing else
    local live = j.state == 'queued' and j.line == best_member
    local expires = live and j.deadline and tonumber(j.deadline) < now
    local size = 0
    if live and not expires then
      size = #(j.args or '') + #(j.payload or '')
      if room and (r.taken or mine > 0) and size > room then break end -- it stays at the head
    end
    best.pos = best.pos + 1 -- taken off its line (below, with the rest)
    if live then
      incr(P .. ':prio', j.priority, -1)
      zrem(P .. ':queued_at', id)
    end
    if not live then
      expired = expired + 1 -- (dropped: counts as an expired job does, bounding the call)
    elseif expires then
      local msg = 'deadline ' .. j.deadline .. ' passed before it started'
      finish(id, j, 'queued', 'dead', now, {'error',
        cjson.encode({kind = 'expired', message = msg, traceback = ''})})
      total('expired')
      expired = expired + 1
    else
      local attempts = tonumber(j.attempts) + 1
      redis.call('HSET', jobkey(id), 'state', 'running', 'attempts', attempts,
        'worker', r.worker, 'lease_until', r.lease_until, 'started_at', r.now,
        'cancel_requested', '0', 'tc', '1')
      if j.progress then redis.call('HDEL', jobkey(id), 'progress') end
      move(id, j.queue, 'queued', 'running')
      zadd(P .. ':leases', r.lease_until, zid(id))
      sadd(P .. ':worker:' .. r.worker, id)
      incr(P .. ':running', j.type, 1)
      local two = limited[best.pair]
      if two then -- a slot and a token of its queue's and type's limits
        for _, L in ipairs({two[1] or false, two[2] or false}) do
          if L and L.c then L.run = L.run + 1 end
          if L and L.r then
            L.tokens = L.tokens - 1 -- (refilled to now by blocked)
            tokens_taken[L.key] = L
          end
        end
      end
      j.state, j.attempts, j.worker = 'running', tostring(attempts), r.worker
      j.lease_until, j.started_at, j.cancel_requested, j.progress = r.lease_until, r.now, '0', nil
      j.tc = '1'
      j.line = nil -- (stays in the hash, meaning nothing now: not worth sending)
      local flat = {}
      for k, v in pairs(j) do
        flat[#flat + 1] = k
        flat[#flat + 1] = v
      end
      mine = mine + 1
      claimed = claimed + 1
      out[#out + 1] = {tonumber(id), attempts, size, flat, number}
      if room then room = room - size end
    end
  end
end
for _, h in ipairs(heads) do
  local empty = h.last and h.pos == h.read
  if h.pos > 0 then
    redis.call('ZREMRANGEBYRANK', h.key, 0, h.pos - 1)
    if empty then srem(P .. ':pairs', h.pair) end
  end
  if not empty then -- jobs left: parked if its limits now block it
    local why, at = blocked(h.pair, now)
    if why then park(h.pair, why, at) end
  end
end
local buckets = {}
for key, L in pairs(tokens_taken) do
  buckets[#buckets + 1] = key
  buckets[#buckets + 1] = string.format('%.17g %.17g', L.tokens, L.at)
end
if #buckets > 0 then redis.call('HSET', P .. ':tokens', unpack(buckets)) end
return reply(out)
