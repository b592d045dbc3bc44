-- Record one delivery-webhook message in the outbox (`_webhook_emit.lua` says how), for a
-- change made by the same MULTI this script is queued in (an opt-out, a reply, a rejected
-- event): the transaction makes both or neither.
--
-- A change that may be made again harmlessly (the same inbound SMS posted twice) names a
-- key of its own in KEYS[3]: the message is recorded only if that key is new (it is kept
-- ARGV[4] seconds), so the change is announced once.
--
-- KEYS[1]     n:{s}:wh:outbox              the outbox of the subject's shard
-- KEYS[2]     n:{s}:wh:seq                 its counter
-- KEYS[3]     n:{s}:wh:once:{key}          optional: announce only once
--
-- ARGV[1]     the event type (`notifier.webhooks.catalogue.EVENT_TYPES`)
-- ARGV[2]     the subject's id (a client, an appointment, an event)
-- ARGV[3]     the payload's data, a JSON object
-- ARGV[4]     with KEYS[3]: how long that key is kept, seconds
--
-- Returns 1 when recorded, 0 when announced before.
-- #include _webhook_emit
if #KEYS == 3 and not redis.call('SET', KEYS[3], 1, 'NX', 'EX', ARGV[4]) then return 0 end
emit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
return 1
