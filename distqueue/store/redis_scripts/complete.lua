-- complete_many: ARGV now, worker (or ''), k, then k items: id, token, result,
-- result_kind; then as many further complete_many calls made at once (the store
-- groups them: one script call for all) the same way: now, worker, k, k items
-- -> one reply per item, of every call in order: 'ok', 'notfound' or 'stale'
-- Commands: per job one HMGET and one HSET; the indexes and counts once per call (and
-- for a job others wait for, see release_waiters in _lib.lua).
local out = {}
local done = 0
local i = 1
while i <= #ARGV do
  local now, worker, k = tonumber(ARGV[i]), ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  for _ = 1, k do
    local id, token = ARGV[i], ARGV[i + 1]
    local h, j = holder(id, token, worker, 'queue', 'type', 'tc', 'waiters')
    if h == 'ok' then
      unlease(id, j)
      finish(id, j, 'running', 'succeeded', now,
        {'result', ARGV[i + 2], 'result_kind', ARGV[i + 3]})
      done = done + 1
    end
    out[#out + 1] = h
    i = i + 4
  end
end
if done > 0 then total('succeeded', done) end
return reply(out)
