-- workers: ARGV cutoff, limit, purge (most stale records deleted), jobs (most ids per
-- worker) -> {{id, seen, info, {job id, ...}}, ...} by id: the workers seen at or
-- after cutoff, at most limit. Deletes at most `purge` records seen before cutoff.
-- Walks the registry (at most its cap, see worker_note) in id order, never the jobs:
-- a worker's jobs come from its own P:worker:<w> set (the heartbeat's), smallest first.
local cutoff, limit, purge, jobs = ARGV[1], tonumber(ARGV[2]), ARGV[3], ARGV[4]
local seen, ids, infos = P .. ':workers:seen', P .. ':workers:ids', P .. ':workers'
local stale = redis.call('ZRANGEBYSCORE', seen, '-inf', '(' .. cutoff, 'LIMIT', 0, purge)
if #stale > 0 then
  redis.call('ZREM', seen, unpack(stale))
  redis.call('ZREM', ids, unpack(stale))
  redis.call('HDEL', infos, unpack(stale))
end
local min = tonumber(cutoff)
local out = {}
local from = '-'
while #out < limit do
  local chunk = redis.call('ZRANGEBYLEX', ids, from, '+', 'LIMIT', 0, 500)
  for _, worker in ipairs(chunk) do
    local at = redis.call('ZSCORE', seen, worker)
    if at and tonumber(at) >= min then
      local held = redis.call('SORT', P .. ':worker:' .. worker, 'LIMIT', 0, jobs)
      out[#out + 1] = {worker, at, redis.call('HGET', infos, worker), held}
      if #out == limit then break end
    end
  end
  if #chunk < 500 then break end
  from = '(' .. chunk[#chunk]
end
return out
