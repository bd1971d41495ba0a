-- peek (changes nothing): ARGV queue, state ('queued', 'scheduled' or 'dead'), type
-- ('': any), scan -> {} or {id, {field, value, ...}}: the job whole, as HGETALL gives it.
-- queued: the head a claim of that queue (and type) would take next, pauses and limits
--   aside: the lowest (priority, seq) of the heads of the queue's lines (P:line; the
--   pairs with queued jobs are those of P:pairs and the parked ones: one SMEMBERS and
--   one HKEYS, as a claim reads them), or of the pair's line with a type;
-- scheduled: the first of P:delayed (run_at, then id), of the queue or of the pair;
-- dead: the first of P:dead (finished_at, then id), of the queue or of the pair.
-- Bounded: per line or index one ZRANGE and one HMGET per member looked at, at most
-- `scan` members of each (members whose job is not there any more - data of an
-- earlier version's crash? - are passed over, for a later kick or claim to drop).
local queue, state, kind, scan = ARGV[1], ARGV[2], ARGV[3], tonumber(ARGV[4])
local suffix = queue
if kind ~= '' then suffix = queue .. '\t' .. kind end
-- the first member of `key` whose job (its id: id_of(member); its fields named: j)
-- live(j, member) says is there, and that id; the first member alone read at first
local function first(key, id_of, live, ...)
  local offset, size = 0, 1
  while offset < scan do
    local members = redis.call('ZRANGE', key, offset, math.min(scan, offset + size) - 1)
    for _, member in ipairs(members) do
      local id = id_of(member)
      if live(hmget(id, ...), member) then return member, id end
    end
    if #members < size then return nil end
    offset = offset + #members
    size = 16
  end
  return nil
end
local found = nil
if state == 'queued' then
  local lines = {}
  if kind ~= '' then
    lines[1] = suffix
  else
    local mine, seen = queue .. '\t', {}
    local names = redis.call('SMEMBERS', P .. ':pairs')
    for _, name in ipairs(redis.call('HKEYS', P .. ':parked')) do names[#names + 1] = name end
    for _, name in ipairs(names) do
      if string.sub(name, 1, #mine) == mine and not seen[name] then
        seen[name] = true
        lines[#lines + 1] = name
      end
    end
  end
  local best_prio, best_seq
  for _, pair in ipairs(lines) do
    local member, id = first(P .. ':line:' .. pair, line_id,
      function(j, m) return j.state == 'queued' and j.line == m end, 'state', 'line')
    if member then
      local prio, seq = line_key(member)
      if found == nil or prio < best_prio or (prio == best_prio and seq < best_seq) then
        found, best_prio, best_seq = id, prio, seq
      end
    end
  end
else
  local states = (state == 'dead') and {dead = true} or {scheduled = true, retrying = true}
  local what = (state == 'dead') and 'dead' or 'delayed'
  local _, id = first(P .. ':' .. what .. ':' .. suffix, unzid, function(j)
    return states[j.state] and j.queue == queue and (kind == '' or j.type == kind)
  end, 'state', 'queue', 'type')
  found = id
end
if found == nil then return {} end
return {found, redis.call('HGETALL', jobkey(found))}
