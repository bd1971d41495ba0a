-- stats (changes nothing): no ARGV -> {P:counts, P:prio, P:totals (each as HGETALL
-- gives it), oldest}: oldest is the earliest time (%.17g) at which the first job of a
-- (queue, type, priority) FIFO became queued (its queued_at, else its created_at),
-- '' when no job is queued. Bounded by those FIFOs, never by the jobs: per pair of
-- P:pairs one ZRANGEBYSCORE per priority it has jobs of (and one more), one HMGET
-- per first job. The pairs parked by flow control (P:parked) count too.
local oldest = nil
local live = redis.call('SMEMBERS', P .. ':pairs')
local parked = redis.call('HKEYS', P .. ':parked')
for _, name in ipairs(parked) do
  if string.sub(name, 1, 1) ~= '#' then live[#live + 1] = name end
end
for _, pair in ipairs(live) do
  local key = P .. ':ready:' .. pair
  local from = 0
  while true do
    -- the first job of the most urgent priority at or after `from`'s
    local top = redis.call('ZRANGEBYSCORE', key, num(from), '+inf', 'WITHSCORES', 'LIMIT', 0, 1)
    if not top[1] then break end
    local t = redis.call('HMGET', jobkey(top[1]), 'queued_at', 'created_at')
    local at = tonumber(t[1] or t[2])
    if at and (oldest == nil or at < oldest) then oldest = at end
    from = (math.floor(tonumber(top[2]) / PRIO_SHIFT) + 1) * PRIO_SHIFT
  end
end
return {
  redis.call('HGETALL', P .. ':counts'),
  redis.call('HGETALL', P .. ':prio'),
  redis.call('HGETALL', P .. ':totals'),
  oldest and num(oldest) or '',
}
