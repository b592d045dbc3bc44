-- Cancel one scheduled notification (an operator's cancel in the console): `scheduled` ->
-- `cancelled` with the reason given, off the schedule (and off the in-flight set, if the
-- clock had claimed it but no worker had begun it: `begin` would then find it cancelled),
-- counted in the outcomes, noted in its history and announced
-- (`notification.cancelled`), all at once. One in any other state is left alone: one
-- being sent (`sending`) cannot be stopped, and one ended stays as it ended.
--
-- KEYS[1]     n:{s}:notif:{id}
-- KEYS[2]     n:{s}:schedule
-- KEYS[3]     n:{s}:inflight
-- KEYS[4]     n:{s}:stats:outcomes
-- KEYS[5]     n:{s}:wh:outbox              the shard's webhook outbox (`_webhook_emit.lua`)
-- KEYS[6]     n:{s}:wh:seq                 its counter
-- KEYS[7]     (optional) n:{s}:audit       the shard's audit stream (`_audit.lua`)
--
-- ARGV[1]     the notification id
-- ARGV[2]     the reason recorded
-- ARGV[3]     how long a cancelled notification is kept, seconds
-- ARGV[4..]   (with KEYS[7]) the operator's audit entry, appended when it cancels
--
-- Returns 1 when it cancelled it now, else 0 (any state found, `cancelled` too: one
-- cancelled already, by a first click or by the system, was not cancelled by this call).
-- #include _webhook_emit
-- #include _audit
local state = redis.call('HGET', KEYS[1], 'state')
if state ~= 'scheduled' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'cancelled', 'reason', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
-- `channel` is left out of the hash when the id ends with it (`notif_fields`)
local channel = redis.call('HGET', KEYS[1], 'channel') or string.match(ARGV[1], '[^:]*$')
redis.call('HINCRBY', KEYS[4], 'cancelled:' .. channel, 1)
note_history(KEYS[1], 'cancelled', ARGV[2])
emit_notification(KEYS[5], KEYS[6], KEYS[1], ARGV[1], 'cancelled')
if #KEYS == 7 then audit(KEYS[7], 4) end
return 1
