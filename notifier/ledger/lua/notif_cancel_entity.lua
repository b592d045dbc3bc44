-- Cancel every still-scheduled notification about one entity, counting each in the
-- outcomes. One being sent right now cannot be stopped, but it is marked `superseded`: if
-- its send fails and would be retried, it is cancelled instead, and a failure report later
-- never moves it to the other channel.
--
-- KEYS[1]     n:by-entity:{ref}            the entity's notification ids
-- KEYS[2]     n:schedule
-- KEYS[3]     n:inflight
-- KEYS[4]     n:stats:outcomes
--
-- ARGV[1]     the prefix of a notification's key, `n:notif:`
-- ARGV[2]     the reason recorded (`superseded`)
-- ARGV[3]     how long a cancelled notification is kept, seconds
--
-- Returns how many notifications were cancelled.
local cancelled = 0
for _, id in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[1] .. id
  local state = redis.call('HGET', key, 'state')
  if state == 'scheduled' then
    redis.call('HSET', key, 'state', 'cancelled', 'reason', ARGV[2])
    redis.call('EXPIRE', key, ARGV[3])
    redis.call('ZREM', KEYS[2], id)
    redis.call('ZREM', KEYS[3], id)
    redis.call('HINCRBY', KEYS[4], 'cancelled:' .. redis.call('HGET', key, 'channel'), 1)
    cancelled = cancelled + 1
  elseif state == 'sending' or state == 'sent' then
    redis.call('HSET', key, 'superseded', ARGV[2])
  end
end
return cancelled
