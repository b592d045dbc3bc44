-- Claim sends whose report is overdue, for the repair job to look up: the ids in the
-- index of sends awaiting a report scored at or before now, oldest first, each moved to a
-- later score (a claim's lease) so that a run elsewhere does not look them up too, and a
-- run that dies leaves them to a run after the lease. Atomic, as `notif_claim.lua` is.
--
-- KEYS[1]     n:{s}:awaiting-report        one shard's (the caller calls it per shard)
--
-- ARGV[1]     now, epoch seconds
-- ARGV[2]     the most ids to claim
-- ARGV[3]     the claim's end (when a claimed id is due again), epoch seconds
--
-- Returns the claimed ids.
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, ARGV[2])
for _, id in ipairs(ids) do
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], id)
end
return ids
