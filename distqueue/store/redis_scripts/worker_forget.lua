-- worker_forget: ARGV worker -> 0 (its jobs are not touched)
local worker = ARGV[1]
redis.call('ZREM', P .. ':workers:seen', worker)
redis.call('ZREM', P .. ':workers:ids', worker)
redis.call('HDEL', P .. ':workers', worker)
return 0
