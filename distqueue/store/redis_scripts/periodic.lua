-- periodic (the schedules' changes; see P:periodic in _lib.lua):
-- ARGV 'set', name, definition, paused (0/1), next_at, max_periodics -> {definition,
--   paused, next_at} as stored: a schedule of that name with that definition is kept
--   as it is; otherwise it is stored as given ('full': a new one beyond max_periodics,
--   nothing changed)
-- ARGV 'remove', name -> 1, or 0 when there is none
-- ARGV 'pause', name, paused (0/1) -> 1, or 0 when there is none
local defs, next_at, paused = P .. ':periodic', P .. ':periodic:next', P .. ':periodic:paused'
local op, name = ARGV[1], ARGV[2]
if op == 'set' then
  local old = redis.call('HGET', defs, name)
  if old == ARGV[3] then
    return {old, redis.call('SISMEMBER', paused, name), redis.call('ZSCORE', next_at, name)}
  end
  if not old and redis.call('HLEN', defs) >= tonumber(ARGV[6]) then return 'full' end
  redis.call('HSET', defs, name, ARGV[3])
  redis.call('ZADD', next_at, ARGV[5], name)
  if ARGV[4] == '1' then
    redis.call('SADD', paused, name)
  else
    redis.call('SREM', paused, name)
  end
  return {ARGV[3], tonumber(ARGV[4]), redis.call('ZSCORE', next_at, name)}
end
if redis.call('HEXISTS', defs, name) == 0 then return 0 end
if op == 'remove' then
  redis.call('HDEL', defs, name)
  redis.call('ZREM', next_at, name)
  redis.call('SREM', paused, name)
elseif ARGV[3] == '1' then
  redis.call('SADD', paused, name)
else
  redis.call('SREM', paused, name)
end
return 1
