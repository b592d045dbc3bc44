-- Add a planned notification unless one with this id exists in any state but `cancelled`:
-- the first plan wins, so replays and duplicate events add nothing. One planned `expired`
-- or `suppressed` has ended already, and is counted in the outcomes like any other.
--
-- KEYS[1]     n:notif:{id}                 the notification's hash
-- KEYS[2]     n:schedule                   scheduled ids by due time
-- KEYS[3]     n:by-recipient:{to}:{to_id}  the recipient's notifications by due time
-- KEYS[4]     n:stats:outcomes             final states counted by state and channel
-- KEYS[5..]   n:by-entity:{ref}            each entity index the notification joins: a
--                                          sorted set, every score 0 (small, it is kept
--                                          compact, where a set of strings is a hashtable
--                                          before Redis 7.2); one written as a set by an
--                                          older version is made a sorted set here
--
-- ARGV[1]     the notification id
-- ARGV[2]     its due time, epoch seconds
-- ARGV[3]     how long an entity index is kept after its last add, seconds
-- ARGV[4..]   the hash's field/value pairs (`state`, `channel` among them)
--
-- Returns 1 when added, 0 when one with this id was kept.
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'cancelled' then return 0 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
local planned = redis.call('HGET', KEYS[1], 'state')
if planned == 'scheduled' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
else
  -- `channel` is left out of the hash when the id ends with it (`notif_fields`)
  local channel = redis.call('HGET', KEYS[1], 'channel') or string.match(ARGV[1], '[^:]*$')
  redis.call('HINCRBY', KEYS[4], planned .. ':' .. channel, 1)
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
for i = 5, #KEYS do
  if redis.call('TYPE', KEYS[i]).ok == 'set' then
    local ids = redis.call('SMEMBERS', KEYS[i])
    redis.call('DEL', KEYS[i])
    for _, id in ipairs(ids) do redis.call('ZADD', KEYS[i], 0, id) end
  end
  redis.call('ZADD', KEYS[i], 0, ARGV[1])
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
return 1
