-- Cancel every still-scheduled notification about one entity, counting each in the
-- outcomes. One being sent right now cannot be stopped, but it is marked `superseded`: if
-- its send fails and would be retried, it is cancelled instead, and a failure report later
-- never moves it to the other channel.
--
-- The entity's ids live in KEYS[1], so the caller reads them first and passes each id's
-- key: it WATCHes KEYS[1] before reading and runs this script inside the MULTI, so an id
-- added in between fails the transaction and the caller reads again (`Store` does). An id
-- passed but no longer in KEYS[1] is left alone.
--
-- KEYS[1]     n:{s}:by-entity:{ref}        the entity's notification ids: a sorted set
--                                          or a set (`notif_add.lua` says when)
-- KEYS[2]     n:{s}:schedule
-- KEYS[3]     n:{s}:inflight
-- KEYS[4]     n:{s}:stats:outcomes
-- KEYS[5]     n:{s}:wh:outbox              the shard's webhook outbox (`_webhook_emit.lua`)
-- KEYS[6]     n:{s}:wh:seq                 its counter
-- KEYS[7..]   n:{s}:notif:{id} of each id in ARGV[3..], in the same order
--
-- ARGV[1]     the reason recorded (`superseded`)
-- ARGV[2]     how long a cancelled notification is kept, seconds
-- ARGV[3..]   the entity's notification ids, as read from KEYS[1]
--
-- Returns how many notifications were cancelled; each is announced
-- (`notification.cancelled`) and noted in its history (`_webhook_emit.lua`).
-- #include _webhook_emit
local cancelled = 0
local in_set = redis.call('TYPE', KEYS[1]).ok == 'set'
for i = 7, #KEYS do
  local id = ARGV[i - 4]
  local state = false
  local indexed
  if in_set then
    indexed = redis.call('SISMEMBER', KEYS[1], id) == 1
  else
    indexed = redis.call('ZSCORE', KEYS[1], id) ~= false
  end
  if indexed then
    state = redis.call('HGET', KEYS[i], 'state')
  end
  if state == 'scheduled' then
    redis.call('HSET', KEYS[i], 'state', 'cancelled', 'reason', ARGV[1])
    redis.call('EXPIRE', KEYS[i], ARGV[2])
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    -- `channel` is left out of the hash when the id ends with it (`notif_fields`)
    local channel = redis.call('HGET', KEYS[i], 'channel') or string.match(id, '[^:]*$')
    redis.call('HINCRBY', KEYS[4], 'cancelled:' .. channel, 1)
    note_history(KEYS[i], 'cancelled', ARGV[1])
    emit_notification(KEYS[5], KEYS[6], KEYS[i], id, 'cancelled')
    cancelled = cancelled + 1
  elseif state == 'sending' or state == 'sent' then
    redis.call('HSET', KEYS[i], 'superseded', ARGV[1])
  end
end
return cancelled
