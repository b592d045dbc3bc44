-- Add a planned notification unless one with this id exists in any state but `cancelled`:
-- the first plan wins, so replays and duplicate events add nothing. One planned `expired`
-- or `suppressed` has ended already, and is counted in the outcomes like any other.
--
-- KEYS[1]     n:{s}:notif:{id}             the notification's hash
-- KEYS[2]     n:{s}:schedule               scheduled ids by due time
-- KEYS[3]     n:{s}:by-recipient:{to}:{to_id}  the recipient's notifications in the
--                                          shard, by due time
-- KEYS[4]     n:{s}:stats:outcomes         final states counted by state and channel
-- KEYS[5]     n:{s}:wh:outbox              the shard's webhook outbox (`_webhook_emit.lua`)
-- KEYS[6]     n:{s}:wh:seq                 its counter
-- KEYS[7..]   n:{s}:by-entity:{ref}        each entity index the notification joins
--                                          (then, when ARGV[5] is '1', the console's
--                                          shard's audit stream n:{s}:audit, last: `_audit.lua`): a
--                                          sorted set, every score 0, while Redis keeps
--                                          that compact (ids of at most 64 bytes, at most
--                                          128 of them); past that, or as older versions
--                                          wrote it, a set (a hashtable either way before
--                                          Redis 7.2, and a set's is the smaller)
--
-- ARGV[1]     the notification id
-- ARGV[2]     its due time, epoch seconds
-- ARGV[3]     how long an entity index is kept after its last add, seconds
-- ARGV[4]     how long a notification planned as already ended (`expired`,
--             `suppressed`) is kept, seconds, as `notif_finish.lua` keeps one that ends
--             later (the retention and the history: the clock retires it in between),
--             and a recipient's index after the latest due time in it
-- ARGV[5]     '1' when an operator's audit entry follows (ARGV[6..10], appended when
--             the notification is added), else '0'
-- ARGV[6..]   the hash's field/value pairs (`state`, `channel` among them), from
--             ARGV[11] when an audit entry is given
--
-- Returns 1 when added, 0 when one with this id was kept. An added one is announced:
-- `notification.scheduled`, or the state it was planned in (`expired`, `suppressed`).

-- Redis's defaults for a compact sorted set: zset-max-listpack-value / -entries (Redis 7),
-- zset-max-ziplist-value / -entries (Redis 6).
local COMPACT_BYTES, COMPACT_MEMBERS = 64, 128
-- #include _webhook_emit
-- #include _audit
local state = redis.call('HGET', KEYS[1], 'state')
if state and state ~= 'cancelled' then return 0 end
local audited = ARGV[5] == '1'
local indexes, fields = #KEYS, 6
if audited then indexes, fields = #KEYS - 1, 11 end
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, fields))
local planned = redis.call('HGET', KEYS[1], 'state')
if planned == 'scheduled' then
  redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
else
  -- `channel` is left out of the hash when the id ends with it (`notif_fields`)
  local channel = redis.call('HGET', KEYS[1], 'channel') or string.match(ARGV[1], '[^:]*$')
  redis.call('HINCRBY', KEYS[4], planned .. ':' .. channel, 1)
  redis.call('EXPIRE', KEYS[1], ARGV[4])
end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
-- A recipient's index expires ARGV[4] after the latest due time in it: nothing in it is
-- shown after that (the clock trims and retires older entries: `index_trim.lua`), and a
-- recipient nothing is planned for again leaves no index behind.
local latest = redis.call('ZRANGE', KEYS[3], -1, -1, 'WITHSCORES')
redis.call('EXPIREAT', KEYS[3], math.ceil(tonumber(latest[2]) + tonumber(ARGV[4])))
for i = 7, indexes do
  local index = redis.call('TYPE', KEYS[i]).ok
  if index == 'zset' and (#ARGV[1] > COMPACT_BYTES
                          or redis.call('ZCARD', KEYS[i]) >= COMPACT_MEMBERS) then
    -- Past Redis's compact limits a sorted set costs more than a set: made a set here.
    local ids = redis.call('ZRANGE', KEYS[i], 0, -1)
    redis.call('DEL', KEYS[i])
    redis.call('SADD', KEYS[i], unpack(ids))
    index = 'set'
  end
  if index == 'set' or (index == 'none' and #ARGV[1] > COMPACT_BYTES) then
    redis.call('SADD', KEYS[i], ARGV[1])
  else
    redis.call('ZADD', KEYS[i], 0, ARGV[1])
  end
  redis.call('EXPIRE', KEYS[i], ARGV[3])
end
emit_notification(KEYS[5], KEYS[6], KEYS[1], ARGV[1], planned)
if audited then audit(KEYS[#KEYS], 6) end
return 1
