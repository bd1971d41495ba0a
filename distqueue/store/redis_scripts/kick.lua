-- kick: ARGV queue, type ('': any), n, now, stale_max -> the ids queued again, in order:
-- up to n of the queue's dead jobs (of the type, when given) queued again as retry
-- queues them, dead longest first (finished_at, then id: P:dead); when it has none, up
-- to n of its scheduled and retrying jobs queued now, soonest due first (run_at, then
-- id: P:delayed). With a type, the pair's own index is read (P:dead:<queue>\t<type>),
-- never the queue's other types' jobs.
-- Bounded by n: one ZRANGE per chunk read, per job one HMGET and one HSET (and an HDEL
-- of finished_at), the indexes and counts once per call. A member whose job is not (or
-- no longer) in that state there (written by an earlier version's crash?) is dropped
-- from the index, at most stale_max of them a call: past that the call stops short,
-- and the next one goes on.
local queue, kind, n, now = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local stale_max = tonumber(ARGV[5])
local suffix = queue
if kind ~= '' then suffix = queue .. '\t' .. kind end
local stale = 0
-- up to n jobs of index `what` ('dead' or 'delayed') in one of `states`, in its order,
-- each as its fields (and id); the stale members dropped
local function take(what, states)
  local key = P .. ':' .. what .. ':' .. suffix
  local out = {}
  local offset = 0
  while #out < n and stale <= stale_max do
    local want = n - #out
    local members = redis.call('ZRANGE', key, offset, offset + want - 1)
    for _, member in ipairs(members) do
      local id = unzid(member)
      local j = hmget(id, 'state', 'queue', 'type', 'priority', 'finished_at')
      if states[j.state] and j.queue == queue and (kind == '' or j.type == kind) then
        j.id = id
        out[#out + 1] = j
      else
        zrem(key, member)
        if j.type and j.queue == queue then -- (its other index: the queue's or the pair's)
          zrem(P .. ':' .. what .. ':' .. queue, member)
          zrem(P .. ':' .. what .. ':' .. queue .. '\t' .. j.type, member)
        end
        stale = stale + 1
      end
    end
    if #members < want then break end
    offset = offset + #members
  end
  return out
end
local ids = {}
local dead = take('dead', {dead = true})
if #dead > 0 or stale > stale_max then
  for _, j in ipairs(dead) do
    revive(j.id, j, now)
    ids[#ids + 1] = j.id
  end
  return reply(ids)
end
for _, j in ipairs(take('delayed', {scheduled = true, retrying = true})) do
  unschedule(j.id, j)
  requeue(j.id, j, j.state, now)
  ids[#ids + 1] = j.id
end
return reply(ids)
