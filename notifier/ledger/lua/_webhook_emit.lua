-- Included, not run alone: a script that changes what delivery webhooks announce says
-- `-- #include _webhook_emit` where these functions are to be defined, and
-- `notifier.ledger.lua.lua_source` puts this file's text there. It records the message in
-- the outbox in the same script as the change it announces (the outbox pattern: a crash
-- never loses one, and none is recorded for a change that did not happen). The clock fans
-- the outbox out to the endpoints (`notifier.webhooks.outbox`).
--
-- An outbox entry is JSON: [n, type, "sec.usec" (Redis's TIME), subject id, data], n from
-- the counter of the outbox's shard, so it grows with every entry of the shard in the
-- order Redis made the changes. The fan-out announces it as `data.sequence` n x S + s (S
-- the shard count, s the shard: `ShardKeys.announced_sequence`), unique across shards and
-- growing with every change of one notification, as all of them are in its shard. The data is a JSON object's text as the caller gave it (kept as text: Lua's
-- cjson cannot tell an empty array from an empty object), or, from `emit_notification`,
-- the notification's fields in the order of `notifier.webhooks.catalogue.
-- NOTIFICATION_FIELDS`, false for one not set.
--
-- KEYS        none of its own: callers pass their KEYS entries for n:{s}:wh:outbox
--             (`outbox`), n:{s}:wh:seq (`seq`) and the notification's hash (`notif`), all
--             of one shard s
--
-- It also keeps each notification's history on its own hash (`note_history`): every
-- script that changes a notification's state, and a delivery report that changes what is
-- on record, appends one entry, so the console can say what happened when. Entries are
-- fields `h1`, `h2`, ..., and `hn` the number of changes recorded; each value is
-- "{epoch seconds} {state} {note}" (the note may be empty), cut to at most 64 bytes of
-- whole UTF-8 characters so the hash stays in Redis's compact encoding
-- (`notifier.ledger.notif_fields` says why). A delivery report's state is
-- `report:{status}` and its note the provider's code. At most HISTORY_MAX entries are
-- kept: past that, the newest replaces the last, so the first ones and the latest are
-- shown, and `hn` beyond HISTORY_MAX says how many changes there were (the page says some
-- are not kept). The planned state is not an entry (the
-- hash's `created` and `state` say it: pending notifications stay as small as before);
-- retiring a notification drops its history with the rest of its content
-- (`index_trim.lua`). The parser is `notifier.console.history.parse_history`.
--
-- Returns nothing: it defines `emit`, `emit_notification`, `note_history` and
-- `DELIVERY_EVENTS`.
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
-- See above: the history entries of a notification (`h1`.. and their count `hn`).
local HISTORY_MAX, HISTORY_BYTES = 16, 64
local function note_history(notif, state, note)
  local now = redis.call('TIME')
  local entry = now[1] .. ' ' .. state
  if note and note ~= '' then entry = entry .. ' ' .. note end
  if #entry > HISTORY_BYTES then
    -- Cut before a UTF-8 continuation byte (0x80-0xBF): whole characters only.
    local cut = HISTORY_BYTES
    while cut > 0 and entry:byte(cut + 1) >= 128 and entry:byte(cut + 1) < 192 do
      cut = cut - 1
    end
    entry = string.sub(entry, 1, cut)
  end
  local count = redis.call('HINCRBY', notif, 'hn', 1)
  redis.call('HSET', notif, 'h' .. math.min(count, HISTORY_MAX), entry)
end
