-- retry: ARGV id, now -> 'ok', 'notfound' or 'illegal:<state>' (only dead or cancelled)
local id, now = ARGV[1], tonumber(ARGV[2])
local j = hmget(id, 'state', 'queue', 'type', 'priority', 'finished_at')
if not j.state then return 'notfound' end
if j.state ~= 'dead' and j.state ~= 'cancelled' then return 'illegal:' .. j.state end
revive(id, j, now)
return reply('ok')
