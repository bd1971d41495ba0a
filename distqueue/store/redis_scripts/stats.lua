-- stats (changes nothing): no ARGV -> {P:counts, P:prio, P:totals (each as HGETALL
-- gives it), oldest}: oldest is the earliest time (%.17g) at which a queued job
-- became queued (its queued_at, else its created_at: P:queued_at's first score), ''
-- when no job is queued. One ZRANGE, however many jobs, pairs and priorities are
-- queued (P:prio has one field per priority that has queued jobs).
local top = redis.call('ZRANGE', P .. ':queued_at', 0, 0, 'WITHSCORES')
return {
  redis.call('HGETALL', P .. ':counts'),
  redis.call('HGETALL', P .. ':prio'),
  redis.call('HGETALL', P .. ':totals'),
  top[2] and num(tonumber(top[2])) or '',
}
