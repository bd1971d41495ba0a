-- migrate: brings a store an earlier version wrote to P:format 4, in bounded steps
-- (the Python side calls again until done; see RedisStore._migrate). Either:
-- ARGV 'scheduled' or 'leases', cursor, count -> the next ZSCAN cursor ('0': done).
--   Pads the members of a store written before P:format 2 (bare ids) into zids, at
--   most about `count` per call.
-- ARGV 'ready', count -> how many jobs it moved (0: done). Moves at most `count`
--   jobs from the ready zsets of a store written before P:format 3 (P:ready:<pair>,
--   scored priority * 2^48 + seq) into the lines (P:line:<pair>, see _lib.lua), in
--   the same order: each keeps its seq (the score less its priority's part, exact for
--   the priorities 0..10 of those versions), and gets its line field and its place in
--   P:queued_at (at its queued_at, else its created_at). P:prio and P:pairs stay as
--   they are. The pairs with old ready zsets are those of P:pairs and the parked ones
--   (one SMEMBERS and one HKEYS a call, as a claim reads them). An entry whose job is
--   gone or not queued (a crash of an earlier version) is dropped, as its claim would.
-- ARGV 'index', state, after, count -> the last id it looked at ('': done). Builds the
--   indexes of P:format 4 (see _lib.lua) for a store written before it: the jobs in
--   `state` (dead, scheduled or retrying: P:state:<state>, by id) with ids above
--   `after`, at most `count` a call, go into their queue's and pair's P:dead (by
--   finished_at) or P:delayed (by run_at). Idempotent (a ZADD again changes nothing);
--   a job already moved on by this version (which keeps the indexes itself) is not
--   in that state any more, and is passed over.
if ARGV[1] == 'index' then
  local state, budget = ARGV[2], tonumber(ARGV[4])
  local ids = redis.call('ZRANGEBYSCORE', P .. ':state:' .. state, '(' .. ARGV[3], '+inf',
    'LIMIT', 0, budget)
  for _, id in ipairs(ids) do
    local j = hmget(id, 'state', 'queue', 'type', 'finished_at', 'run_at', 'created_at')
    if j.state == state and j.queue and j.type then
      if state == 'dead' then
        index_add('dead', j, id, j.finished_at or j.created_at)
      else
        local at = j.run_at or redis.call('ZSCORE', P .. ':scheduled', zid(id))
        if at then index_add('delayed', j, id, at) end
      end
    end
  end
  if #ids < budget then return reply('') end
  return reply(ids[#ids])
end
if ARGV[1] == 'ready' then
  local budget = tonumber(ARGV[2])
  local top = tonumber(redis.call('GET', P .. ':seq') or '0')
  local live = redis.call('SMEMBERS', P .. ':pairs')
  for _, name in ipairs(redis.call('HKEYS', P .. ':parked')) do
    if string.sub(name, 1, 1) ~= '#' then live[#live + 1] = name end
  end
  local moved = 0
  for _, pair in ipairs(live) do
    if moved >= budget then break end
    local old = P .. ':ready:' .. pair
    local got = redis.call('ZRANGE', old, 0, budget - moved - 1, 'WITHSCORES')
    for i = 1, #got, 2 do
      local id, score = got[i], tonumber(got[i + 1])
      local j = hmget(id, 'state', 'priority', 'queued_at', 'created_at', 'line')
      if j.state == 'queued' and not j.line then
        local prio = tonumber(j.priority)
        -- (a priority over 10 was never exact in a score: clamped to a seq taken)
        local seq = math.floor(math.max(0, math.min(top, score - prio * PRIO_SHIFT)))
        local member = line_member(prio, seq, id)
        redis.call('HSET', jobkey(id), 'line', member)
        zadd(P .. ':line:' .. pair, 0, member)
        zadd(P .. ':queued_at', j.queued_at or j.created_at, id)
      end
    end
    if #got > 0 then
      redis.call('ZREMRANGEBYRANK', old, 0, #got / 2 - 1)
      moved = moved + #got / 2
    end
  end
  return reply(moved)
end
local key = P .. ':' .. ARGV[1]
local scan = redis.call('ZSCAN', key, ARGV[2], 'COUNT', tonumber(ARGV[3]))
local flat = scan[2]
for i = 1, #flat, 2 do
  local member, score = flat[i], flat[i + 1]
  if #member < 20 then
    redis.call('ZREM', key, member)
    redis.call('ZADD', key, score, zid(member))
  end
end
return scan[1]
