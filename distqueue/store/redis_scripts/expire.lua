-- expire: ARGV now, poison_limit, batch -> ids of at most `batch` jobs whose lease
-- ran out (each counted as lost), in (lease end, id) order; fewer than `batch`: no
-- lease has run out any more
local now, limit = tonumber(ARGV[1]), tonumber(ARGV[2])
local ids = due_in_order(P .. ':leases', now, tonumber(ARGV[3]))
for _, id in ipairs(ids) do lose(id, now, limit) end
return reply(ids)
