-- note_types: ARGV now, type... -> nothing; a type's time only moves forward
local now = tonumber(ARGV[1])
for i = 2, #ARGV do
  local seen = redis.call('HGET', P .. ':types', ARGV[i])
  if not seen or tonumber(seen) < now then
    redis.call('HSET', P .. ':types', ARGV[i], ARGV[1])
  end
end
return 0
