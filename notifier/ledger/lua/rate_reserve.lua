-- Reserve the next free send slot of a sender (GCRA): the slot is max(now, next), and
-- next moves one interval on.
--
-- KEYS[1]     n:rate:{sender}              the sender's next free slot, epoch seconds
--
-- ARGV[1]     now, epoch seconds
-- ARGV[2]     the interval between sends, seconds
--
-- Returns the reserved slot, epoch seconds, as a string.
local now = tonumber(ARGV[1])
local slot = math.max(now, tonumber(redis.call('GET', KEYS[1]) or '0'))
redis.call('SET', KEYS[1], tostring(slot + tonumber(ARGV[2])), 'EX', 86400)
return tostring(slot)
