-- heartbeat: ARGV worker, lease_until -> {{id, token, cancel 0/1}, ...}
-- Commands: per job one HMGET and one HSET; the lease set once per call.
local worker, lease_until = ARGV[1], ARGV[2]
local out = {}
for _, id in ipairs(redis.call('SMEMBERS', P .. ':worker:' .. worker)) do
  local j = redis.call('HMGET', jobkey(id), 'attempts', 'cancel_requested')
  redis.call('HSET', jobkey(id), 'lease_until', lease_until)
  zadd(P .. ':leases', lease_until, zid(id))
  out[#out + 1] = {tonumber(id), tonumber(j[1]), tonumber(j[2])}
end
return reply(out)
