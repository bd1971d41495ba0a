-- claim: ARGV worker, n, now, lease_until, queues (JSON array or null), types (same),
-- max_bytes ('' = no byte limit), taken ('1': earlier calls of this claim took jobs),
-- then for each further claim of the same queues and types made at once (the store
-- groups them: one script call for all): worker, n, now, lease_until, max_bytes, taken
-- -> {{id, attempts, size, {field, value, ...}, claim}, ...} in hand-out order: each
-- job whole (as HGETALL gives it, as it is after the claim), and the number of the
-- claim (1, 2, ...) it went to. The claims are served one after the other, in order,
-- as separate calls would be. Jobs past their deadline become dead.
-- Walks only live (queue, type) pairs: P:pairs holds those with ready jobs, and a
-- worker naming both its queues and its types looks at just those combinations
-- (whichever of the two is smaller). At most EXPIRED_MAX jobs past their deadline
-- are ended by one call (a claim may then hand out fewer than n: the next one goes on).
-- A job's size is its args + payload; with max_bytes, a claim stops before the
-- job that would take its total past it (unless it would be the claim's first job),
-- leaving that job untouched at the head of its ready zset.
-- Commands: per job one HGETALL and one HSET (and an HDEL of a progress report);
-- per pair it looks at, one ZRANGE per CHUNK_MIN..n jobs read from its head and one
-- ZREMRANGEBYRANK of those taken; the indexes and counts once per call.
local EXPIRED_MAX = 1000
local CHUNK_MIN = 16
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
-- each candidate's ready zset, read from its head a chunk at a time: h.ids and
-- h.scores hold ranks h.first .. h.read - 1; h.pos is the rank of its head now
local function fill(h, size)
  -- one more than asked: when it is not there, the zset ends with these
  local got = redis.call('ZRANGE', h.key, h.read, h.read + size, 'WITHSCORES')
  h.ids, h.scores, h.first = {}, {}, h.read
  for i = 1, #got, 2 do
    h.ids[#h.ids + 1] = got[i]
    h.scores[#h.scores + 1] = tonumber(got[i + 1])
  end
  h.read = h.read + #h.ids
  h.last = #h.ids <= size
end
local claimed = 0
local function head(h) -- its head's id and score, reading on when its chunk is used up
  local i = h.pos - h.first + 1
  if h.ids[i] == nil and not h.last then
    fill(h, math.max(CHUNK_MIN, n - claimed))
    i = 1
  end
  return h.ids[i], h.scores[i]
end
local heads, seen = {}, {}
local first = #candidates == 1 and n or math.min(n, CHUNK_MIN)
for _, pair in ipairs(candidates) do
  if not seen[pair] then
    seen[pair] = true
    local h = {pair = pair, key = P .. ':ready:' .. pair, read = 0, pos = 0}
    fill(h, first)
    if h.ids[1] then
      heads[#heads + 1] = h
    elseif from_pairs then
      srem(P .. ':pairs', pair) -- a dead pair left by an earlier version
    end
  end
end
local out = {}
local expired = 0
for number, r in ipairs(requests) do
  local mine, room, now = 0, r.room, r.now
  while mine < r.n and expired < EXPIRED_MAX do
    local best, best_id, best_score = nil, nil, nil
    for _, h in ipairs(heads) do
      local id, score = head(h)
      if id and (best == nil or score < best_score) then best, best_id, best_score = h, id, score end
    end
    if best == nil then break end
    local id = best_id
    local j = fields(redis.call('HGETALL', jobkey(id)))
    local expires = j.deadline and tonumber(j.deadline) < tonumber(now)
    local size = 0
    if j.state and not expires then
      size = #(j.args or '') + #(j.payload or '')
      if room and (r.taken or mine > 0) and size > room then break end -- it stays at the head
    end
    best.pos = best.pos + 1 -- taken off its ready zset (below, with the rest)
    if j.state then incr(P .. ':prio', j.priority, -1) end
    if not j.state then
      -- no such job (data of a crashed earlier version?): dropped from the ready set
    elseif expires then
      local msg = 'deadline ' .. j.deadline .. ' passed before it started'
      finish(id, j, 'queued', 'dead', tonumber(now), {'error',
        cjson.encode({kind = 'expired', message = msg, traceback = ''})})
      total('expired')
      expired = expired + 1
    else
      local attempts = tonumber(j.attempts) + 1
      redis.call('HSET', jobkey(id), 'state', 'running', 'attempts', attempts,
        'worker', r.worker, 'lease_until', r.lease_until, 'started_at', now,
        'cancel_requested', '0')
      if j.progress then redis.call('HDEL', jobkey(id), 'progress') end
      move(id, j.queue, 'queued', 'running')
      zadd(P .. ':leases', r.lease_until, zid(id))
      sadd(P .. ':worker:' .. r.worker, id)
      j.state, j.attempts, j.worker = 'running', tostring(attempts), r.worker
      j.lease_until, j.started_at, j.cancel_requested, j.progress = r.lease_until, now, '0', nil
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
  if h.pos > 0 then
    redis.call('ZREMRANGEBYRANK', h.key, 0, h.pos - 1)
    if h.last and h.pos == h.read then srem(P .. ':pairs', h.pair) end
  end
end
return reply(out)
