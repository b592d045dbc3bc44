-- The next event of the holder's turn (its queue member), renewing the lease; with the
-- queue empty the turn is given back.
--
-- KEYS[1]     n:{s}:turn:{ref}             (s: the subject's shard)
-- KEYS[2]     n:{s}:subject-queue:{ref}      the subject's unapplied events
-- KEYS[3]     n:{s}:turns
--
-- ARGV[1]     the caller's token
-- ARGV[2]     the lease, milliseconds
-- ARGV[3]     the lease's end, epoch seconds
-- ARGV[4]     the subject's ref
--
-- Returns the queue member of the next event; false when the queue is empty, or when the
-- turn is no longer the caller's (its lease ran out and another worker took it).
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return false end
local head = redis.call('ZRANGE', KEYS[2], 0, 0)
if #head == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[3], ARGV[4])
  return false
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[3], ARGV[4])
return head[1]
