-- enqueue: ARGV now, specs (JSON array), payloads in order of specs with has_payload
-- -> {{id, created 0/1, state}, ...}
local now = ARGV[1]
local specs = cjson.decode(ARGV[2])
local next_payload = 3
local out = {}
local created = 0
for _, s in ipairs(specs) do
  local payload = nil
  if s.has_payload then
    payload = ARGV[next_payload]
    next_payload = next_payload + 1
  end
  local key = s.unique_key
  local existing = nil
  if key ~= cjson.null and key ~= nil then
    existing = redis.call('HGET', P .. ':unique', key)
  end
  if existing then
    out[#out + 1] = {tonumber(existing), 0, hget(existing, 'state')}
  else
    local id = redis.call('INCR', P .. ':next_id')
    local delayed = s.run_at ~= cjson.null and tonumber(s.run_at) > tonumber(now)
    local state = delayed and 'scheduled' or 'queued'
    local f = {'type', s.type, 'queue', s.queue, 'priority', s.priority,
               'max_retries', s.max_retries, 'attempts', 0, 'failures', 0, 'lost', 0,
               'cancel_requested', 0, 'created_at', now}
    for _, name in ipairs({'timeout', 'deadline'}) do
      if s[name] ~= cjson.null then f[#f + 1] = name; f[#f + 1] = num(s[name]) end
    end
    if s.args ~= cjson.null then f[#f + 1] = 'args'; f[#f + 1] = s.args end
    if payload then f[#f + 1] = 'payload'; f[#f + 1] = payload end
    if key ~= cjson.null and key ~= nil then
      f[#f + 1] = 'unique_key'; f[#f + 1] = key
      redis.call('HSET', P .. ':unique', key, id)
    end
    redis.call('HSET', jobkey(id), unpack(f))
    redis.call('ZADD', P .. ':all', id, id)
    set_state(id, s.queue, nil, state)
    if delayed then
      redis.call('HSET', jobkey(id), 'run_at', num(s.run_at))
      redis.call('ZADD', P .. ':scheduled', s.run_at, zid(id))
    else
      push_ready(id, s.queue, s.type, s.priority)
    end
    created = created + 1
    out[#out + 1] = {id, 1, state}
  end
end
if created > 0 then total('submitted', created) end
return out
