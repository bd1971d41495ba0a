-- init (run alone, without _lib.lua): KEYS[1] the prefix, ARGV a new epoch
-- -> {epoch, how, format}: how is 'existing' (the store's own epoch), 'new' (nothing
-- under the prefix: a new store, its epoch the one given) or 'upgraded' (data of a
-- version before epochs, which gets the epoch given); format is P:format ('' when
-- there is none): data of a format before '4' needs bringing to it (migrate.lua):
-- '' (the members of P:scheduled and P:leases need padding, the ready zsets moving
-- into the lines and the indexes of format 4 building), '2' (the ready zsets and the
-- indexes) or '3' (the indexes: P:dead and P:delayed)
local P = KEYS[1]
local epoch = redis.call('GET', P .. ':epoch')
if epoch then return {epoch, 'existing', redis.call('GET', P .. ':format') or ''} end
redis.call('SET', P .. ':epoch', ARGV[1])
local old = redis.call('EXISTS', P .. ':next_id', P .. ':seq', P .. ':all', P .. ':totals',
  P .. ':types', P .. ':scheduled', P .. ':leases')
if old == 0 then
  redis.call('SET', P .. ':format', '4')
  return {ARGV[1], 'new', '4'}
end
return {ARGV[1], 'upgraded', redis.call('GET', P .. ':format') or ''}
