-- Put back: `sending` -> `scheduled` at a later due time (retry, quiet hours, waiting).
-- One superseded meanwhile is `cancelled` instead, and counted in the outcomes.
--
-- KEYS[1]     n:notif:{id}
-- KEYS[2]     n:inflight
-- KEYS[3]     n:schedule
-- KEYS[4]     n:stats:outcomes
--
-- ARGV[1]     the notification id
-- ARGV[2]     the new due time, epoch seconds
-- ARGV[3]     the reason recorded
-- ARGV[4]     the prefix of the by-recipient index, `n:by-recipient:`
-- ARGV[5]     '1' when this was no attempt at all (a rate-limit slot): not counted
-- ARGV[6..]   field/value pairs to set
--
-- Returns 1 when rescheduled, -1 when cancelled (superseded), 0 when not `sending`.
if redis.call('HGET', KEYS[1], 'state') ~= 'sending' then return 0 end
local superseded = redis.call('HGET', KEYS[1], 'superseded')
if superseded then
  redis.call('HSET', KEYS[1], 'state', 'cancelled', 'reason', superseded)
  redis.call('HDEL', KEYS[1], 'lease')
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'cancelled:' .. redis.call('HGET', KEYS[1], 'channel'), 1)
  return -1
end
redis.call('HSET', KEYS[1], 'state', 'scheduled', 'due', ARGV[2], 'reason', ARGV[3])
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
if #ARGV > 5 then redis.call('HSET', KEYS[1], unpack(ARGV, 6)) end
redis.call('HDEL', KEYS[1], 'lease')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
local to = redis.call('HGET', KEYS[1], 'to') .. ':' .. redis.call('HGET', KEYS[1], 'to_id')
redis.call('ZADD', ARGV[4] .. to, ARGV[2], ARGV[1])
return 1
