-- enqueue: ARGV now, specs (JSON array), then the payloads of the specs with
-- has_payload, in order; then as many further enqueues made at once (the store groups
-- them: one script call for all) the same way: now, specs, payloads
-- -> {{id, created 0/1, state}, ...}, one per spec of every enqueue in order
-- One HSET per new job (every field at once); the unique keys looked up in one HMGET;
-- ids and FIFO places taken with one INCRBY each; the indexes and counts flushed once.
-- The enqueues are done one after the other, as separate calls would be.
local calls = {}
local a = 1
while a <= #ARGV do
  local specs = cjson.decode(ARGV[a + 1])
  local c = {now = ARGV[a], specs = specs}
  a = a + 2
  for _, s in ipairs(specs) do
    if s.has_payload then
      s.payload = ARGV[a]
      a = a + 1
    end
    if s.unique_key == cjson.null then s.unique_key = nil end
  end
  calls[#calls + 1] = c
end
-- the unique keys already taken, in one HMGET per CHUNK keys
local taken = {}
local keys = {}
for _, c in ipairs(calls) do
  for _, s in ipairs(c.specs) do
    if s.unique_key then keys[#keys + 1] = s.unique_key end
  end
end
for i = 1, #keys, CHUNK do
  local last = math.min(#keys, i + CHUNK - 1)
  local ids = redis.call('HMGET', P .. ':unique', unpack(keys, i, last))
  for k = i, last do
    if ids[k - i + 1] then taken[keys[k]] = ids[k - i + 1] end
  end
end
-- which specs make a job (the first of a key does): their ids next
local new = 0
local mine = {}
for _, c in ipairs(calls) do
  for _, s in ipairs(c.specs) do
    local key = s.unique_key
    if not key or not (taken[key] or mine[key]) then
      new = new + 1
      if key then mine[key] = true end
    end
  end
end
local id = 0
if new > 0 then id = redis.call('INCRBY', P .. ':next_id', new) - new end
local out = {}
local states = {} -- id -> state of the jobs made here
local unique = {}
for _, c in ipairs(calls) do
  local now = c.now
  for _, s in ipairs(c.specs) do
    local key = s.unique_key
    local existing = key and taken[key]
    if existing then
      out[#out + 1] = {tonumber(existing), 0, states[existing] or hget(existing, 'state')}
    else
      id = id + 1
      local sid = tostring(id)
      local delayed = s.run_at ~= cjson.null and tonumber(s.run_at) > tonumber(now)
      local state = delayed and 'scheduled' or 'queued'
      local f = {'type', s.type, 'queue', s.queue, 'priority', s.priority,
                 'max_retries', s.max_retries, 'attempts', 0, 'failures', 0, 'lost', 0,
                 'cancel_requested', 0, 'created_at', now, 'state', state}
      for _, name in ipairs({'timeout', 'deadline'}) do
        if s[name] ~= cjson.null then f[#f + 1] = name; f[#f + 1] = num(s[name]) end
      end
      if s.args ~= cjson.null then f[#f + 1] = 'args'; f[#f + 1] = s.args end
      if s.payload then f[#f + 1] = 'payload'; f[#f + 1] = s.payload end
      if key then
        f[#f + 1] = 'unique_key'; f[#f + 1] = key
        unique[#unique + 1] = key
        unique[#unique + 1] = sid
        taken[key] = sid
      end
      if delayed then
        f[#f + 1] = 'run_at'; f[#f + 1] = num(s.run_at)
        zadd(P .. ':scheduled', s.run_at, zid(id))
      else
        push_ready(sid, s.queue, s.type, s.priority)
      end
      redis.call('HSET', jobkey(sid), unpack(f))
      zadd(P .. ':all', sid, sid)
      move(sid, s.queue, nil, state)
      states[sid] = state
      out[#out + 1] = {id, 1, state}
    end
  end
end
if #unique > 0 then send('HSET', P .. ':unique', unique, 2) end
if new > 0 then total('submitted', new) end
return reply(out)
