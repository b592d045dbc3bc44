-- Store an event unless its id is known: SET NX semantics on a hash, plus the pending
-- index and, when the subject is given, the subject's queue; and, when given, the
-- dramatiq message that applies it, written as dramatiq's RedisBroker writes an enqueue
-- (its dispatch.lua, command `enqueue`), so the event and its message are one write.
--
-- KEYS[1..3] are in the subject's shard s (without a subject, the shard of the id);
-- KEYS[4..5] only when the broker is on the ledger's one Redis (never on a cluster, whose
-- broker is apart: `notifier.worker.queueing`).
--
-- KEYS[1]     n:{s}:event:{id}
-- KEYS[2]     n:{s}:events:pending         the shard's accepted, unapplied events by arrival
-- KEYS[3]     n:{s}:subject-queue:{ref}    (optional) the subject's queue
-- KEYS[4]     (optional, with KEYS[3]) dramatiq's queue: `{namespace}:{queue}`, a list
-- KEYS[5]     (with KEYS[4]) its messages: `{namespace}:{queue}.msgs`, a hash
--
-- ARGV[1]     the raw event body
-- ARGV[2]     received at, epoch seconds
-- ARGV[3]     the event id
-- ARGV[4]     (with KEYS[3]) the subject's ref
-- ARGV[5]     (with KEYS[3]) occurred at, epoch seconds
-- ARGV[6]     (with KEYS[3]) the event's queue member
-- ARGV[7]     (with KEYS[4]) the message's id in Redis (its `redis_message_id` option)
-- ARGV[8]     (with KEYS[4]) the encoded message
--
-- Returns 1 when stored (and enqueued), 0 when this id was stored before (nothing is
-- written, nothing enqueued).
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], 'raw', ARGV[1], 'status', 'accepted', 'received_at', ARGV[2])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[3])
if KEYS[3] then
  redis.call('HSET', KEYS[1], 'subject', ARGV[4], 'occurred', ARGV[5], 'member', ARGV[6])
  redis.call('ZADD', KEYS[3], ARGV[5], ARGV[6])
end
if KEYS[4] then
  redis.call('HSET', KEYS[5], ARGV[7], ARGV[8])
  redis.call('RPUSH', KEYS[4], ARGV[7])
end
return 1
