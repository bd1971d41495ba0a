-- expire: ARGV now, poison_limit -> ids whose lease ran out (each counted as lost)
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = redis.call('ZRANGEBYSCORE', P .. ':leases', '-inf', now)
for _, id in ipairs(ids) do lose(id, now, limit) end
return ids
