-- complete_many: ARGV now, worker (or ''), then per item: id, token, result, result_kind
-- -> one reply per item: 'ok', 'notfound' or 'stale'
local now, worker = ARGV[1], ARGV[2]
local out = {}
local done = 0
for i = 3, #ARGV, 4 do
  local id, token = ARGV[i], ARGV[i + 1]
  local h = holder(id, token, worker)
  if h == 'ok' then
    local j = redis.call('HMGET', jobkey(id), 'queue', 'worker')
    unlease(id, j[2])
    redis.call('HSET', jobkey(id), 'result', ARGV[i + 2], 'result_kind', ARGV[i + 3])
    finish(id, j[1], 'running', 'succeeded', tonumber(now), nil)
    done = done + 1
  end
  out[#out + 1] = h
end
if done > 0 then total('succeeded', done) end
return out
