-- Give the turn back whatever is queued (the caller failed; its retry or the sweep takes
-- the turn again).
--
-- KEYS[1]     n:{s}:turn:{ref}             (s: the subject's shard)
-- KEYS[2]     n:{s}:turns
--
-- ARGV[1]     the caller's token
-- ARGV[2]     the subject's ref
--
-- Returns 1 when given back, 0 when the turn was not the caller's.
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('ZREM', KEYS[2], ARGV[2])
return 1
