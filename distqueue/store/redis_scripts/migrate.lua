-- migrate: ARGV 'scheduled' or 'leases', cursor, count -> the next ZSCAN cursor ('0':
-- done). Pads the members of a store written before P:format 2 (bare ids) into
-- zids, at most about `count` per call.
local key = P .. ':' .. ARGV[1]
local reply = redis.call('ZSCAN', key, ARGV[2], 'COUNT', tonumber(ARGV[3]))
local flat = reply[2]
for i = 1, #flat, 2 do
  local member, score = flat[i], flat[i + 1]
  if #member < 20 then
    redis.call('ZREM', key, member)
    redis.call('ZADD', key, score, zid(member))
  end
end
return reply[1]
