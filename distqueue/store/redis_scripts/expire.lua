-- expire: ARGV now, poison_limit -> ids whose lease ran out (each counted as lost),
-- in (lease end, id) order
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = due_in_order(P .. ':leases', now)
for _, id in ipairs(ids) do lose(id, now, limit) end
return ids
