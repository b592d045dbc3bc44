-- Put ids whose lease expired back on the schedule, due at once: their claimer died
-- between claim and send, or its message was lost.
--
-- KEYS[1]     n:{s}:inflight
-- KEYS[2]     n:{s}:schedule
--
-- ARGV[1]     now, epoch seconds
-- ARGV[2]     the most ids to put back
--
-- Returns the ids put back.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[1], id)
end
return ids
