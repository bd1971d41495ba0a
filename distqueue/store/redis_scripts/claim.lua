-- claim: ARGV worker, n, now, lease_until, queues (JSON array or null), types (same)
-- -> {{id, attempts}, ...} in hand-out order; jobs past their deadline become dead
local worker, n, now, lease_until = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local queues, types = cjson.decode(ARGV[5]), cjson.decode(ARGV[6])
local function set_of(list)
  if list == cjson.null then return nil end
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end
local qs, ts = set_of(queues), set_of(types)
local zsets = {}
for _, pair in ipairs(redis.call('SMEMBERS', P .. ':pairs')) do
  local tab = string.find(pair, '\t', 1, true)
  local q, t = string.sub(pair, 1, tab - 1), string.sub(pair, tab + 1)
  if (qs == nil or qs[q]) and (ts == nil or ts[t]) then
    zsets[#zsets + 1] = P .. ':ready:' .. pair
  end
end
local out = {}
while #out < n do
  local best_key, best_id, best_score = nil, nil, nil
  for _, z in ipairs(zsets) do
    local head = redis.call('ZRANGE', z, 0, 0, 'WITHSCORES')
    if head[1] then
      local score = tonumber(head[2])
      if best_score == nil or score < best_score then
        best_key, best_id, best_score = z, head[1], score
      end
    end
  end
  if best_id == nil then break end
  local id = best_id
  local j = redis.call('HMGET', jobkey(id), 'queue', 'type', 'priority', 'deadline', 'attempts')
  drop_ready(id, j[1], j[2], j[3])
  if j[4] and tonumber(j[4]) < tonumber(now) then
    local msg = 'deadline ' .. j[4] .. ' passed before it started'
    finish(id, j[1], 'queued', 'dead', tonumber(now),
      cjson.encode({kind = 'expired', message = msg, traceback = ''}))
    total('expired')
  else
    local attempts = tonumber(j[5]) + 1
    set_state(id, j[1], 'queued', 'running')
    redis.call('HSET', jobkey(id), 'attempts', attempts, 'worker', worker,
      'lease_until', lease_until, 'started_at', now, 'cancel_requested', '0')
    redis.call('HDEL', jobkey(id), 'progress')
    redis.call('ZADD', P .. ':leases', lease_until, id)
    redis.call('SADD', P .. ':worker:' .. worker, id)
    out[#out + 1] = {tonumber(id), attempts}
  end
end
return out
