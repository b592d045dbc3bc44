-- Record a delivery report in its own fields, beside `state`: a report arriving before
-- the send is recorded (callbacks race the provider's HTTP answer) is kept, and `finish`
-- later leaves it alone. A report never replaces one further along (a lower rank), and a
-- final one (rank 4: delivered, undelivered, failed, bounce, dropped) is replaced by
-- nothing: a carrier's late `undelivered` after `delivered` does not unsay it (nor send
-- the message again by the other channel). A report about another message than the one
-- recorded as the send (a second copy, from duplicate window 3: its SID differs from our
-- `receipt`) changes nothing either.
-- A report that settles the send (a final one, or the repair job's `unknown`) takes it out
-- of the index of sends awaiting a report, whether or not it was further along.
--
-- KEYS[1]     n:{s}:notif:{id}
-- KEYS[2]     n:{s}:awaiting-report
-- KEYS[3]     n:{s}:wh:outbox              the shard's webhook outbox (`_webhook_emit.lua`)
-- KEYS[4]     n:{s}:wh:seq                 its counter
-- KEYS[5]     n:{s}:stats:failed:{YYYY-MM-DD}  the day's failures per provider code
--
-- ARGV[1]     the delivery status
-- ARGV[2]     its rank (how far along it is)
-- ARGV[3]     the provider's error code, or ''
-- ARGV[4]     now, epoch seconds
-- ARGV[5]     the notification id
-- ARGV[6]     '1' when the report settles the send, else '0'
-- ARGV[7]     the provider's id of the message reported on, or '' (not known)
--
-- Returns the delivery status on record after it ('' for none yet), or 0 when the
-- notification is unknown. A final report recorded about a notification already `sent`
-- is announced (`notification.delivered` or `.failed`); one that came before the send was
-- recorded is announced by `notif_finish.lua`, after `notification.sent`. A report that
-- changes what is on record is noted in the notification's history (`report:{status}`,
-- with its code: `_webhook_emit.lua`).
local FINAL = 4
-- #include _webhook_emit
if redis.call('EXISTS', KEYS[1]) == 0 then
  if ARGV[6] == '1' then redis.call('ZREM', KEYS[2], ARGV[5]) end
  return 0
end
local receipt = redis.call('HGET', KEYS[1], 'receipt')
if ARGV[7] ~= '' and receipt and receipt ~= '' and receipt ~= ARGV[7] then
  return redis.call('HGET', KEYS[1], 'delivery') or ''
end
if ARGV[6] == '1' then redis.call('ZREM', KEYS[2], ARGV[5]) end
local rank = tonumber(redis.call('HGET', KEYS[1], 'delivery_rank') or '0')
local new = tonumber(ARGV[2])
if new > rank or (new == rank and rank < FINAL) then
  redis.call('HSET', KEYS[1], 'delivery', ARGV[1], 'delivery_rank', ARGV[2],
             'delivery_at', ARGV[4])
  if ARGV[3] ~= '' then redis.call('HSET', KEYS[1], 'code', ARGV[3]) end
  note_history(KEYS[1], 'report:' .. ARGV[1], ARGV[3] ~= '' and ('code ' .. ARGV[3]) or '')
  local reported = DELIVERY_EVENTS[ARGV[1]]
  if reported and redis.call('HGET', KEYS[1], 'state') == 'sent' then
    emit_notification(KEYS[3], KEYS[4], KEYS[1], ARGV[5], reported)
  end
  -- the console's count of the day's failures (`notifier.ledger.daily`), once per
  -- notification: one that ended `failed` was counted then
  if reported == 'failed' and redis.call('HGET', KEYS[1], 'state') ~= 'failed' then
    local channel = redis.call('HGET', KEYS[1], 'channel') or string.match(ARGV[5], '[^:]*$')
    redis.call('HINCRBY', KEYS[5], channel .. '|' .. (redis.call('HGET', KEYS[1], 'code') or ''), 1)
    redis.call('EXPIRE', KEYS[5], 691200)
  end
end
return redis.call('HGET', KEYS[1], 'delivery') or ''
