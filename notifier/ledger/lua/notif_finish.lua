-- Finish: `sending` -> a final state (sent, failed, expired, suppressed), fields set, by
-- the holder of the lease only (fencing: the lease's token is the lease's end as `begin`
-- wrote it, so a worker whose lease ran out and was taken over is refused).
-- The cluster-wide count of outcomes (by state and channel) feeds /metrics, and so does a
-- send's lateness: sent_at minus the due time it was sent for (after quiet hours, pacing
-- or a retry moved it, so what it measures is how far the workers lag), into cumulative
-- buckets. A send recorded without `sent_at` (one found sent after a crash) has no known
-- lateness and is not observed.
--
-- A message that left after its sender lost the lease (the process paused between its
-- last look and the provider's call) is still recorded, so that the ledger and /metrics
-- count every message that left; the state never moves backwards:
-- - the notification is `sending` (under the new holder) or `scheduled` again: no send is
--   recorded yet, so this one is its send: `sent`, as above (the new holder's own finish
--   is then refused, or recorded as a second send if it sent too);
-- - it is `sent` as found sent after a crash (no `sent_at`): that was this message, whose
--   fields are filled in (counted once already);
-- - otherwise (sent by another, or ended another way meanwhile) it is a second send:
--   `sent_again` (a count) and `sent_again_at` on the hash, and `sent_again:{channel}` in
--   the outcomes. Not a state, and not in the lateness (which observes first sends).
-- A finish retried after a lost reply (its `sent_at` already recorded) changes nothing.
--
-- A send recorded as the notification's own, through a provider that reports delivery
-- (ARGV[6] not ''), goes into the index of sends awaiting a final report, scored by when
-- the clock's repair job is to look it up, unless a final report (rank 4) came first.
--
-- KEYS[1]     n:{s}:notif:{id}
-- KEYS[2]     n:{s}:inflight
-- KEYS[3]     n:{s}:stats:outcomes
-- KEYS[4]     n:{s}:stats:lateness
-- KEYS[5]     n:{s}:schedule
-- KEYS[6]     n:{s}:awaiting-report
-- KEYS[7]     n:{s}:wh:outbox              the shard's webhook outbox (`_webhook_emit.lua`)
-- KEYS[8]     n:{s}:wh:seq                 its counter
-- KEYS[9]     n:{s}:stats:sent:{YYYY-MM-DD}  the day's sends per hour
--                                          (`notifier.ledger.daily`)
-- KEYS[10]    n:{s}:stats:failed:{YYYY-MM-DD}  the day's failures per provider code
--
-- ARGV[1]     the notification id
-- ARGV[2]     the final state
-- ARGV[3]     how long a finished notification is kept, seconds
-- ARGV[4]     the lateness buckets' upper bounds, seconds, comma-separated ('1,5,15')
-- ARGV[5]     the lease's token: its end as `begin` wrote it
-- ARGV[6]     when to look the send up if no final report came (epoch seconds), or ''
-- ARGV[7..]   field/value pairs to set
--
-- Returns 1 when finished, 0 when refused (not `sending` under this lease, and no send to
-- record), 2 when recorded as a second send.
-- A final state set is announced (`notification.{state}`); a send whose final delivery
-- report came first (callbacks race the provider's answer) is announced right after, so
-- `delivered` follows `sent` in the messages' sequence as it does in fact. A second send,
-- or the fields of a send already recorded, announce nothing. The final state (with its
-- reason) and a second send are noted in the notification's history (`_webhook_emit.lua`).
-- #include _webhook_emit
local state = redis.call('HGET', KEYS[1], 'state')
local sent_at_given = false
if ARGV[2] == 'sent' then
  for i = 7, #ARGV - 1, 2 do
    if ARGV[i] == 'sent_at' then sent_at_given = ARGV[i + 1] end
  end
end
-- `channel` is left out of the hash when the id ends with it (`notif_fields`)
local function channel_of()
  return redis.call('HGET', KEYS[1], 'channel') or string.match(ARGV[1], '[^:]*$')
end
-- the send is the notification's own: await its report (see above)
local function await_report()
  if ARGV[6] ~= '' and tonumber(redis.call('HGET', KEYS[1], 'delivery_rank') or '0') < 4 then
    redis.call('ZADD', KEYS[6], ARGV[6], ARGV[1])
  end
end
if not (state == 'sending' and redis.call('HGET', KEYS[1], 'lease') == ARGV[5]) then
  if not sent_at_given then return 0 end
  if state then
    local recorded = redis.call('HMGET', KEYS[1], 'sent_at', 'sent_again_at')
    if recorded[1] == sent_at_given then return 1 end
    if recorded[2] == sent_at_given then return 2 end
  end
  if state == 'sent' and not redis.call('HGET', KEYS[1], 'sent_at') then
    redis.call('HSET', KEYS[1], unpack(ARGV, 7))
    await_report()
    return 1
  end
  if state ~= 'sending' and state ~= 'scheduled' then
    if state then
      redis.call('HINCRBY', KEYS[1], 'sent_again', 1)
      redis.call('HSET', KEYS[1], 'sent_again_at', sent_at_given)
      note_history(KEYS[1], 'sent_again', 'a second send, after a lost lease')
    end
    redis.call('HINCRBY', KEYS[3], 'sent_again:' .. channel_of(), 1)
    return 2
  end
  redis.call('ZREM', KEYS[5], ARGV[1])
end
redis.call('HSET', KEYS[1], 'state', ARGV[2], unpack(ARGV, 7))
redis.call('HDEL', KEYS[1], 'lease')
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[1])
local channel = channel_of()
redis.call('HINCRBY', KEYS[3], ARGV[2] .. ':' .. channel, 1)
note_history(KEYS[1], ARGV[2], redis.call('HGET', KEYS[1], 'reason'))
local sent_at = tonumber(redis.call('HGET', KEYS[1], 'sent_at') or '')
if ARGV[2] == 'sent' then await_report() end
emit_notification(KEYS[7], KEYS[8], KEYS[1], ARGV[1], ARGV[2])
local reported = DELIVERY_EVENTS[redis.call('HGET', KEYS[1], 'delivery') or '']
if ARGV[2] == 'sent' and reported then
  emit_notification(KEYS[7], KEYS[8], KEYS[1], ARGV[1], reported)
end
if ARGV[2] == 'sent' and sent_at then
  local late = math.max(0, sent_at - tonumber(redis.call('HGET', KEYS[1], 'due')))
  local kind = redis.call('HGET', KEYS[1], 'kind') or string.match(ARGV[1], '^[^:]*')
  local series = kind .. ':' .. channel .. ':'
  for bound in string.gmatch(ARGV[4], '[^,]+') do
    if late <= tonumber(bound) then redis.call('HINCRBY', KEYS[4], series .. bound, 1) end
  end
  redis.call('HINCRBY', KEYS[4], series .. 'count', 1)
  redis.call('HINCRBYFLOAT', KEYS[4], series .. 'sum', tostring(late))
end
-- The console's counters of the day (`notifier.ledger.daily`, which names the TTLs): a send
-- by the UTC hour of its `sent_at`; a failure by its code, unless a failure report counted it.
if ARGV[2] == 'sent' and sent_at then
  local hour = string.format('%02d', math.floor(sent_at % 86400 / 3600))
  redis.call('HINCRBY', KEYS[9], hour .. '|' .. channel, 1)
  redis.call('EXPIRE', KEYS[9], 259200)
elseif ARGV[2] == 'failed' and reported ~= 'failed' then
  redis.call('HINCRBY', KEYS[10], channel .. '|' .. (redis.call('HGET', KEYS[1], 'code') or ''), 1)
  redis.call('EXPIRE', KEYS[10], 691200)
end
return 1
