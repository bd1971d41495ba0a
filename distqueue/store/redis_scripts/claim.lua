-- claim: ARGV worker, n, now, lease_until, queues (JSON array or null), types (same),
-- max_bytes ('' = no byte limit), taken ('1': earlier calls of this claim took jobs)
-- -> {{id, attempts, size (0 without max_bytes)}, ...} in hand-out order; jobs past
-- their deadline become dead.
-- Walks only live (queue, type) pairs: P:pairs holds those with ready jobs, and a
-- worker naming both its queues and its types looks at just those combinations
-- (whichever of the two is smaller). At most EXPIRED_MAX jobs past their deadline
-- are ended by one claim (it may then hand out fewer than n: the next one goes on).
-- A job's size is HSTRLEN args + payload; with max_bytes, the claim stops before the
-- job that would take its total past it (unless it would be the claim's first job),
-- leaving that job untouched at the head of its ready zset.
local EXPIRED_MAX = 1000
local worker, n, now, lease_until = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local queues, types = cjson.decode(ARGV[5]), cjson.decode(ARGV[6])
local room = tonumber(ARGV[7])
local taken = ARGV[8] == '1'
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
-- the head (most urgent job) of each candidate's ready zset
local heads, seen = {}, {}
local function head_of(h)
  local top = redis.call('ZRANGE', h.key, 0, 0, 'WITHSCORES')
  if top[1] then
    h.id, h.score = top[1], tonumber(top[2])
  else
    h.id, h.score = nil, nil
  end
end
for _, pair in ipairs(candidates) do
  if not seen[pair] then
    seen[pair] = true
    local h = {key = P .. ':ready:' .. pair}
    head_of(h)
    if h.id then
      heads[#heads + 1] = h
    elseif from_pairs then
      redis.call('SREM', P .. ':pairs', pair) -- a dead pair left by an earlier version
    end
  end
end
local out = {}
local expired = 0
while #out < n and expired < EXPIRED_MAX do
  local best = nil
  for _, h in ipairs(heads) do
    if h.id and (best == nil or h.score < best.score) then best = h end
  end
  if best == nil then break end
  local id = best.id
  local j = redis.call('HMGET', jobkey(id), 'queue', 'type', 'priority', 'deadline', 'attempts')
  local expires = j[4] and tonumber(j[4]) < tonumber(now)
  local size = 0
  if room and not expires then
    size = redis.call('HSTRLEN', jobkey(id), 'args') + redis.call('HSTRLEN', jobkey(id), 'payload')
    if (taken or #out > 0) and size > room then break end -- it stays at the head
  end
  drop_ready(id, j[1], j[2], j[3])
  head_of(best)
  if expires then
    local msg = 'deadline ' .. j[4] .. ' passed before it started'
    finish(id, j[1], 'queued', 'dead', tonumber(now),
      cjson.encode({kind = 'expired', message = msg, traceback = ''}))
    total('expired')
    expired = expired + 1
  else
    local attempts = tonumber(j[5]) + 1
    set_state(id, j[1], 'queued', 'running')
    redis.call('HSET', jobkey(id), 'attempts', attempts, 'worker', worker,
      'lease_until', lease_until, 'started_at', now, 'cancel_requested', '0')
    redis.call('HDEL', jobkey(id), 'progress')
    redis.call('ZADD', P .. ':leases', lease_until, zid(id))
    redis.call('SADD', P .. ':worker:' .. worker, id)
    out[#out + 1] = {tonumber(id), attempts, size}
    if room then room = room - size end
  end
end
return out
