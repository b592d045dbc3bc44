-- Store an event unless its id is known: SET NX semantics on a hash, plus the pending
-- index and, when the subject is given, the subject's queue.
--
-- KEYS[1]     n:event:{id}
-- KEYS[2]     n:events:pending             accepted, unapplied events by arrival
-- KEYS[3]     n:subject-queue:{ref}        (optional) the subject's queue
--
-- ARGV[1]     the raw event body
-- ARGV[2]     received at, epoch seconds
-- ARGV[3]     the event id
-- ARGV[4]     (with KEYS[3]) the subject's ref
-- ARGV[5]     (with KEYS[3]) occurred at, epoch seconds
-- ARGV[6]     (with KEYS[3]) the event's queue member
--
-- Returns 1 when stored, 0 when this id was stored before.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'raw', ARGV[1], 'status', 'accepted', 'received_at', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
if KEYS[3] then
  redis.call('HSET', KEYS[1], 'subject', ARGV[4], 'occurred', ARGV[5], 'member', ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
end
return 1
