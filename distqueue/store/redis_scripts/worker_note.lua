-- worker_note: ARGV worker, now, info (JSON object), max_workers -> 0
-- The registry: P:workers (id -> info), P:workers:seen (id by seen), P:workers:ids
-- (every id, score 0: by id). A new worker beyond max_workers evicts the one seen
-- longest ago.
local worker, now, info, cap = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local seen, ids, infos = P .. ':workers:seen', P .. ':workers:ids', P .. ':workers'
if not redis.call('ZSCORE', seen, worker) and redis.call('ZCARD', seen) >= cap then
  local oldest = redis.call('ZPOPMIN', seen)[1]
  redis.call('ZREM', ids, oldest)
  redis.call('HDEL', infos, oldest)
end
redis.call('ZADD', seen, now, worker)
redis.call('ZADD', ids, 0, worker)
redis.call('HSET', infos, worker, info)
return 0
