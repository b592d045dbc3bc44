-- Take a subject's turn unless another worker has it.
--
-- KEYS[1]     n:{s}:turn:{ref}               the token of the turn's holder
-- KEYS[2]     n:{s}:turns                    subjects whose turn is taken, by lease end
--
-- ARGV[1]     the caller's token
-- ARGV[2]     the lease, milliseconds
-- ARGV[3]     the lease's end, epoch seconds
-- ARGV[4]     the subject's ref
--
-- Returns 1 when taken, 0 when another worker has it.
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[4])
return 1
