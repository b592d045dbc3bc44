-- Finish: `sending` -> a final state (sent, failed, expired, suppressed), fields set.
-- The cluster-wide count of outcomes (by state and channel) feeds /metrics, and so does a
-- send's lateness: sent_at minus the due time it was sent for (after quiet hours, pacing
-- or a retry moved it, so what it measures is how far the workers lag), into cumulative
-- buckets. A send recorded without `sent_at` (one found sent after a crash) has no known
-- lateness and is not observed.
--
-- KEYS[1]     n:notif:{id}
-- KEYS[2]     n:inflight
-- KEYS[3]     n:stats:outcomes
-- KEYS[4]     n:stats:lateness
--
-- ARGV[1]     the notification id
-- ARGV[2]     the final state
-- ARGV[3]     how long a finished notification is kept, seconds
-- ARGV[4]     the lateness buckets' upper bounds, seconds, comma-separated ('1,5,15')
-- ARGV[5..]   field/value pairs to set
--
-- Returns 1 when finished, 0 when the notification was not `sending`.
if redis.call('HGET', KEYS[1], 'state') ~= 'sending' then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[2], unpack(ARGV, 5))
redis.call('HDEL', KEYS[1], 'lease')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
-- `kind` and `channel` are left out of the hash when the id starts / ends with them
-- (`notif_fields`)
local channel = redis.call('HGET', KEYS[1], 'channel') or string.match(ARGV[1], '[^:]*$')
redis.call('HINCRBY', KEYS[3], ARGV[2] .. ':' .. channel, 1)
local sent_at = tonumber(redis.call('HGET', KEYS[1], 'sent_at') or '')
if ARGV[2] == 'sent' and sent_at then
  local late = math.max(0, sent_at - tonumber(redis.call('HGET', KEYS[1], 'due')))
  local kind = redis.call('HGET', KEYS[1], 'kind') or string.match(ARGV[1], '^[^:]*')
  local series = kind .. ':' .. channel .. ':'
  for bound in string.gmatch(ARGV[4], '[^,]+') do
    if late <= tonumber(bound) then redis.call('HINCRBY', KEYS[4], series .. bound, 1) end
  end
  redis.call('HINCRBY', KEYS[4], series .. 'count', 1)
  redis.call('HINCRBYFLOAT', KEYS[4], series .. 'sum', tostring(late))
end
return 1
