-- Claim the ids due by ARGV[1]: move them from the schedule to the in-flight set with a
-- lease, in one shard. Atomic, so two clocks never claim the same id. At most ARGV[4] ids
-- are in the shard's in-flight set at once (the caller's share of the cap over every
-- shard, `Schedule.claim`): a burst is fed to the workers as they keep up, so no lease
-- runs out while its message still waits in the queue.
--
-- KEYS[1]     n:{s}:schedule
-- KEYS[2]     n:{s}:inflight
--
-- ARGV[1]     now, epoch seconds
-- ARGV[2]     the most ids to claim
-- ARGV[3]     the lease's end, epoch seconds
-- ARGV[4]     the most ids in the shard's in-flight set at once
--
-- Returns the claimed ids.
local room = tonumber(ARGV[4]) - redis.call('ZCARD', KEYS[2])
if room <= 0 then return {} end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0,
                       math.min(room, tonumber(ARGV[2])))
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[3], id)
end
return ids
