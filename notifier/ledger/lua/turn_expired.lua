-- Candidates are subjects whose lease ended by `n:turns`. That score is the lease's end by
-- the holder's clock, read before its script ran (or on another host), so it can come
-- before the turn key expires: a subject whose key still holds stays, scored again by the
-- key's time to live, because a worker resuming it now would find the turn taken and
-- nothing would resume it later. The others are taken off the set and returned.
--
-- KEYS[1]     n:{s}:turns                  the shard's taken turns
-- KEYS[2..]   n:{s}:turn:{ref} of each candidate (all of shard s)
--
-- ARGV[1]     now, epoch seconds
-- ARGV[2..]   each candidate's ref, in the order of KEYS[2..]
--
-- Returns the refs whose turn has expired.
local expired = {}
for i = 2, #KEYS do
  local ref = ARGV[i]
  local score = redis.call('ZSCORE', KEYS[1], ref)
  if score and tonumber(score) <= tonumber(ARGV[1]) then
    local ttl = redis.call('PTTL', KEYS[i])
    if ttl >= 0 then
      redis.call('ZADD', KEYS[1], tonumber(ARGV[1]) + ttl / 1000, ref)
    else
      redis.call('ZREM', KEYS[1], ref)
      expired[#expired + 1] = ref
    end
  end
end
return expired
