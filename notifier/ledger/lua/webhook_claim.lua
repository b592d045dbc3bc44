-- Claim an endpoint's due messages for sending, leased until ARGV[2], never more than
-- ARGV[3] in flight to it at once across every process (the endpoint's bound), none while
-- it is disabled. A lease that ran out (its sender died or hung past its timeout) puts
-- its message back, due at once: the same message, the same `webhook-id`.
--
-- KEYS[1]     n:wh:{endpoint}:due          message ids by when their next attempt is due
-- KEYS[2]     n:wh:{endpoint}:inflight     message ids being sent, by lease end
-- KEYS[3]     n:wh:{endpoint}:ep           the endpoint's counts and health
--
-- ARGV[1]     now, epoch seconds
-- ARGV[2]     the lease's end, epoch seconds
-- ARGV[3]     how many may be in flight to the endpoint at once
-- ARGV[4]     how many to claim at most
--
-- Returns the ids claimed, soonest due first.
if redis.call('HEXISTS', KEYS[3], 'disabled_at') == 1 then return {} end
local lapsed = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', ARGV[1])
for _, id in ipairs(lapsed) do
  redis.call('ZREM', KEYS[2], id)
  redis.call('ZADD', KEYS[1], ARGV[1], id)
end
local room = math.min(tonumber(ARGV[3]) - redis.call('ZCARD', KEYS[2]), tonumber(ARGV[4]))
if room <= 0 then return {} end
local ids = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, room)
for _, id in ipairs(ids) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('ZADD', KEYS[2], ARGV[2], id)
end
return ids
