-- Included, not run alone: a script that changes what delivery webhooks announce says
-- `-- #include _webhook_emit` where these functions are to be defined, and
-- `notifier.ledger.lua.lua_source` puts this file's text there. It records the message in
-- the outbox in the same script as the change it announces (the outbox pattern: a crash
-- never loses one, and none is recorded for a change that did not happen). The clock fans
-- the outbox out to the endpoints (`notifier.webhooks.outbox`).
--
-- An outbox entry is JSON: [sequence, type, "sec.usec" (Redis's TIME), subject id, data],
-- the sequence from one counter, so it grows with every message in the order Redis made
-- the changes. The data is a JSON object's text as the caller gave it (kept as text: Lua's
-- cjson cannot tell an empty array from an empty object), or, from `emit_notification`,
-- the notification's fields in the order of `notifier.webhooks.catalogue.
-- NOTIFICATION_FIELDS`, false for one not set.
--
-- KEYS        none of its own: callers pass their KEYS entries for n:wh:outbox (`outbox`),
--             n:wh:seq (`seq`) and the notification's hash (`notif`)
--
-- Returns nothing: it defines `emit`, `emit_notification` and `DELIVERY_EVENTS`.
local function emit(outbox, seq, event_type, subject, data)
  local now = redis.call('TIME')
  local n = redis.call('INCR', seq)
  redis.call('RPUSH', outbox, cjson.encode(
    {n, event_type, now[1] .. '.' .. string.format('%06d', now[2]), subject, data}))
end
local function emit_notification(outbox, seq, notif, id, state)
  emit(outbox, seq, 'notification.' .. state, id, redis.call(
    'HMGET', notif, 'kind', 'channel', 'reason', 'code', 'to', 'to_id', 'entity', 'due',
    'delivery', 'sent_at'))
end
-- The event a final delivery report announces (`notifier.ledger.deliveries.
-- DELIVERY_FAILURES` are the failures), nil for a report that is not final.
local DELIVERY_EVENTS = {delivered = 'delivered', undelivered = 'failed', failed = 'failed',
                         bounce = 'failed', dropped = 'failed'}
