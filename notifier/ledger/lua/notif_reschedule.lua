-- Put back: `sending` -> `scheduled` at a later due time (retry, quiet hours, waiting),
-- moved in its recipient's index too, by the holder of the lease only (its token is the
-- lease's end as `begin` wrote it: a worker whose lease was taken over is refused). One superseded meanwhile is `cancelled` instead, and
-- counted in the outcomes.
--
-- The recipient's index is named by the notification's `to` and `to_id`, so the caller
-- passes them (read first, or known from the notification it is sending); the script
-- checks they still match and otherwise changes nothing and returns -2, to be read again.
--
-- KEYS[1]     n:{s}:notif:{id}
-- KEYS[2]     n:{s}:inflight
-- KEYS[3]     n:{s}:schedule
-- KEYS[4]     n:{s}:stats:outcomes
-- KEYS[5]     n:{s}:by-recipient:{to}:{to_id}  the recipient's notifications in the
--                                          shard, by due time
-- KEYS[6]     n:{s}:wh:outbox              the shard's webhook outbox (`_webhook_emit.lua`)
-- KEYS[7]     n:{s}:wh:seq                 its counter
--
-- ARGV[1]     the notification id
-- ARGV[2]     the new due time, epoch seconds
-- ARGV[3]     the reason recorded
-- ARGV[4]     '1' when this was no attempt at all (a rate-limit slot): not counted
-- ARGV[5]     the notification's `to`, as in KEYS[5]
-- ARGV[6]     the notification's `to_id`, as in KEYS[5]
-- ARGV[7]     the lease's token: its end as `begin` wrote it
-- ARGV[8..]   field/value pairs to set (`slot`, and `maybe_sent_at` after a lost answer)
--
-- Returns 1 when rescheduled, -1 when cancelled (superseded), 0 when not `sending` under
-- this lease, -2 when `to`/`to_id` are not ARGV[5]/ARGV[6]. A cancel is announced
-- (`notification.cancelled`); a move is not (`notification.scheduled` is sent once).
-- Either is noted in the notification's history (`scheduled` with the reason, or
-- `cancelled`: `_webhook_emit.lua`).
-- #include _webhook_emit
if redis.call('HGET', KEYS[1], 'state') ~= 'sending' then return 0 end
if redis.call('HGET', KEYS[1], 'lease') ~= ARGV[7] then return 0 end
local to = redis.call('HMGET', KEYS[1], 'to', 'to_id')
if to[1] ~= ARGV[5] or to[2] ~= ARGV[6] then return -2 end
local superseded = redis.call('HGET', KEYS[1], 'superseded')
if superseded then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'reason', superseded)
  redis.call('HDEL', KEYS[1], 'lease')
  redis.call('ZREM', KEYS[2], ARGV[1])
  -- `channel` is left out of the hash when the id ends with it (`notif_fields`)
  local channel = redis.call('HGET', KEYS[1], 'channel') or string.match(ARGV[1], '[^:]*$')
  redis.call('HINCRBY', KEYS[4], 'cancelled:' .. channel, 1)
  note_history(KEYS[1], 'cancelled', superseded)
  emit_notification(KEYS[6], KEYS[7], KEYS[1], ARGV[1], 'cancelled')
  return -1
end
redis.call('HSET', KEYS[1], 'state', 'scheduled', 'due', ARGV[2], 'reason', ARGV[3])
if ARGV[4] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
if #ARGV > 7 then redis.call('HSET', KEYS[1], unpack(ARGV, 8)) end
redis.call('HDEL', KEYS[1], 'lease')
note_history(KEYS[1], 'scheduled', ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
redis.call('ZADD', KEYS[5], ARGV[2], ARGV[1])
return 1
