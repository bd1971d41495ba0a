-- release: ARGV worker, now, vanished (0/1), poison_limit, only (JSON array or null)
-- -> the ids taken back, ascending
local worker, now, vanished, limit = ARGV[1], tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local only = cjson.decode(ARGV[5])
local chosen = {}
local allowed = nil
if only ~= cjson.null then
  allowed = {}
  for _, id in ipairs(only) do allowed[tostring(id)] = true end
end
for _, id in ipairs(redis.call('SMEMBERS', P .. ':worker:' .. worker)) do
  if allowed == nil or allowed[id] then chosen[#chosen + 1] = tonumber(id) end
end
table.sort(chosen)
for _, n in ipairs(chosen) do
  local id = tostring(n)
  if vanished == '1' then
    lose(id, now, limit)
  else
    local j = hmget(id, 'queue', 'type', 'priority', 'cancel_requested', 'tc', 'waiters')
    j.worker = worker
    unlease(id, j)
    if j.cancel_requested == '1' then
      -- a cancel asked while it ran sticks: it never runs again
      finish(id, j, 'running', 'cancelled', now)
    else
      requeue(id, j, 'running', now)
    end
  end
end
return reply(chosen)
