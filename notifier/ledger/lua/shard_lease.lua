-- Keep, take or give up a clock's lease on one shard (`notifier.ledger.shard_leases`): a
-- compare-and-set on the holder's token, so a clock never renews or releases a lease
-- another took after its own ran out.
--
-- KEYS[1]     n:{shard}:clock              the lease: the holder's token, expiring
--
-- ARGV[1]     the clock's token
-- ARGV[2]     'keep': renew it if held; 'take': renew it if held, else take it if free;
--             'release': delete it if held
-- ARGV[3]     the lease, milliseconds
--
-- Returns 1 when the clock holds the lease after the call ('release': when it gave it
-- up), else 0.
local holder = redis.call('GET', KEYS[1])
if ARGV[2] == 'release' then
  if holder == ARGV[1] then
    redis.call('DEL', KEYS[1])
    return 1
  end
  return 0
end
if holder == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  return 1
end
if holder == false and ARGV[2] == 'take' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
  return 1
end
return 0
