-- Drop the entries a fan-out read from the head of one shard's outbox, once their
-- messages are added (`webhook_add.lua`), only if the head is still the entry it read:
-- another clock may have fanned them out and trimmed them meanwhile (then nothing
-- changes). Entries are unique in their outbox (each has the shard's counter), so the
-- same head is the same batch's start.
--
-- KEYS[1]     n:{s}:wh:outbox
--
-- ARGV[1]     how many entries leave the outbox
-- ARGV[2]     the first of them, as read
--
-- Returns ARGV[1] when they left, 0 when the head was not ARGV[2].
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[2] then return 0 end
redis.call('LTRIM', KEYS[1], ARGV[1], -1)
return tonumber(ARGV[1])
