-- Record one delivery-webhook message in the outbox (`_webhook_emit.lua` says how), for a
-- change made by the same MULTI this script is queued in (an opt-out, a reply, a rejected
-- event): the transaction makes both or neither.
--
-- KEYS[1]     n:wh:outbox
-- KEYS[2]     n:wh:seq
--
-- ARGV[1]     the event type (`notifier.webhooks.catalogue.EVENT_TYPES`)
-- ARGV[2]     the subject's id (a client, an appointment, an event)
-- ARGV[3]     the payload's data, a JSON object
--
-- Returns 1.
-- #include _webhook_emit
emit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], ARGV[3])
return 1
