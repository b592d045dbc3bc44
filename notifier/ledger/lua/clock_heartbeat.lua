-- A clock says it is alive, and learns how many are: its token scored by Redis's own
-- clock in the heartbeat set, entries older than a lease dropped (their clocks died or
-- stopped). Redis's time, not the caller's, so that clocks whose hosts' clocks disagree
-- still count each other alike, on the clock the shard leases' expiries keep.
--
-- KEYS[1]     n:clocks                     the heartbeat set: token -> last beat, ms
--
-- ARGV[1]     the clock's token
-- ARGV[2]     the lease, milliseconds
--
-- Returns how many clocks are alive (this one included).
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local lease_ms = tonumber(ARGV[2])
redis.call('ZADD', KEYS[1], now_ms, ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now_ms - lease_ms)
-- Gone once every clock is: no key left behind by a stopped service.
redis.call('PEXPIRE', KEYS[1], 2 * lease_ms)
return redis.call('ZCARD', KEYS[1])
