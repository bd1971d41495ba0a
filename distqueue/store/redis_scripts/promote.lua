-- promote: ARGV now -> ids of scheduled/retrying jobs made queued
local ids = redis.call('ZRANGEBYSCORE', P .. ':scheduled', '-inf', tonumber(ARGV[1]))
for _, id in ipairs(ids) do
  redis.call('ZREM', P .. ':scheduled', id)
  requeue(id, hget(id, 'state'))
end
return ids
