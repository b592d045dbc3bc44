-- Record a delivery report in its own fields, beside `state`: a report arriving before
-- the send is recorded (callbacks race the provider's HTTP answer) is kept, and `finish`
-- later leaves it alone. A report never replaces one further along (a lower rank).
-- A report that settles the send (a final one, or the repair job's `unknown`) takes it out
-- of the index of sends awaiting a report, whether or not it was further along.
--
-- KEYS[1]     n:notif:{id}
-- KEYS[2]     n:awaiting-report
--
-- ARGV[1]     the delivery status
-- ARGV[2]     its rank (how far along it is)
-- ARGV[3]     the provider's error code, or ''
-- ARGV[4]     now, epoch seconds
-- ARGV[5]     the notification id
-- ARGV[6]     '1' when the report settles the send, else '0'
--
-- Returns 1, or 0 when the notification is unknown.
if ARGV[6] == '1' then redis.call('ZREM', KEYS[2], ARGV[5]) end
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local rank = tonumber(redis.call('HGET', KEYS[1], 'delivery_rank') or '0')
if tonumber(ARGV[2]) >= rank then
  redis.call('HSET', KEYS[1], 'delivery', ARGV[1], 'delivery_rank', ARGV[2],
             'delivery_at', ARGV[4])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'code', ARGV[3]) end
end
return 1
