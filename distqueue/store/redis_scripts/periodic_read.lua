-- periodic_read (changes nothing): ARGV 'all' -> {{name, definition, paused 0/1,
-- next_at}, ...} of every schedule, by next_at; ARGV 'due', now, limit -> the same of
-- at most `limit` schedules whose next_at is at or before now, earliest first (by name
-- among equals). Bounded by MAX_PERIODICS: one HGETALL, one SMEMBERS, one ZRANGE.
local defs, next_at, paused = P .. ':periodic', P .. ':periodic:next', P .. ':periodic:paused'
local ranked
if ARGV[1] == 'due' then
  ranked = redis.call('ZRANGEBYSCORE', next_at, '-inf', ARGV[2], 'WITHSCORES', 'LIMIT', 0,
    tonumber(ARGV[3]))
else
  ranked = redis.call('ZRANGE', next_at, 0, -1, 'WITHSCORES')
end
if #ranked == 0 then return {} end
local names = {}
for i = 1, #ranked, 2 do names[#names + 1] = ranked[i] end
local found = hmget_all(defs, names)
local is_paused = {}
for _, name in ipairs(redis.call('SMEMBERS', paused)) do is_paused[name] = true end
local out = {}
for i, name in ipairs(names) do
  if found[i] then
    out[#out + 1] = {name, found[i], is_paused[name] and 1 or 0, ranked[2 * i]}
  end
end
return out
