-- Trim one index of notification ids, and retire the notifications past the retention
-- (`notifier.ledger.trimming`). The clock runs this over every index in turn, so indexes
-- shrink, and content leaves Redis, whether or not anyone reads or writes them.
--
-- An id whose notification hash is gone leaves the index. In a recipient's index (scored
-- by due time), an id due before the retention's start whose notification has ended is
-- retired: its hash keeps only the content-free fields named below (state, kind, channel,
-- reason, times, delivery, attempts: no recipient, entity, params or provider receipt),
-- marked `retired`, for ARGV[3] more seconds (none: deleted), as GOV.UK Notify moves a
-- notification past retention to `notification_history` without its recipient or
-- personalisation (alphagov/notifications-api, `app/dao/notifications_dao.py`,
-- `insert_notification_history_delete_notifications`); then it leaves the index. In an entity's index, a retired id leaves too, and the ids that left are
-- replaced by one member, `~` (no notification id starts so), which reads as a
-- notification no longer on record: "anything sent about this booking?" then answers
-- "maybe", as it did while the dropped ids were still listed (`told_of_booking`). The
-- check and the removal are one script, so an id planned again in between (the same
-- dedupe key) stays indexed.
--
-- KEYS[1]     n:{s}:by-recipient:{to}:{to_id} (a sorted set by due time) or
--             n:{s}:by-entity:{ref} (a sorted set or a set: `notif_add.lua` says when)
-- KEYS[2..]   n:{s}:notif:{id} of each id in ARGV[4..], in the same order
--
-- ARGV[1]     the retention's start, epoch seconds, for a recipient's index; '' for an
--             entity's (nothing is retired through it)
-- ARGV[2]     now, epoch seconds (the `retired` field)
-- ARGV[3]     how long a retired notification is kept, seconds (0: deleted at once)
-- ARGV[4..]   ids read from KEYS[1]
--
-- Returns {ids removed from the index, notifications retired}.

-- What a retired row keeps: the outcome and its times, what it cost (segments), and the
-- delivery's rank, so a report arriving that late still moves only forward. Not its
-- history (`h1`.. `hn`, `_webhook_emit.lua`): the outcome, reason and code kept say how it
-- ended, and the steps before are a detail of the retention, like its content.
local KEEP = {'state', 'kind', 'channel', 'reason', 'code', 'due', 'sent_at',
              'sent_again_at', 'delivery', 'delivery_rank', 'delivery_at', 'attempts',
              'sms_segments'}
local ENDED = {sent = true, failed = true, expired = true, suppressed = true,
               cancelled = true}
-- Stands, in an entity's index, for the ids dropped from it.
local GONE = '~'
local index = redis.call('TYPE', KEYS[1]).ok
if index == 'none' then return {0, 0} end
-- An index emptied below is deleted by Redis, and the `~` added back would have no expiry:
-- it gets back the time the index had left.
local ttl = redis.call('PTTL', KEYS[1])
local by_due = ARGV[1] ~= '' and index == 'zset'
local removed, retired = 0, 0
for i = 2, #KEYS do
  local id = ARGV[i + 2]
  local state = redis.call('HGET', KEYS[i], 'state')
  local drop = not state
  -- No score: no longer in this index (moved or trimmed since it was read): not retired.
  local due = by_due and redis.call('ZSCORE', KEYS[1], id)
  if state and due and tonumber(due) < tonumber(ARGV[1]) and ENDED[state] then
    if redis.call('HEXISTS', KEYS[i], 'retired') == 0 then
      local values = redis.call('HMGET', KEYS[i], unpack(KEEP))
      redis.call('DEL', KEYS[i])
      if tonumber(ARGV[3]) > 0 then
        local row = {'retired', ARGV[2]}
        for j, name in ipairs(KEEP) do
          if values[j] then row[#row + 1] = name; row[#row + 1] = values[j] end
        end
        redis.call('HSET', KEYS[i], unpack(row))
        redis.call('EXPIRE', KEYS[i], ARGV[3])
      end
      retired = retired + 1
    end
    drop = true
  elseif state and not by_due and redis.call('HEXISTS', KEYS[i], 'retired') == 1 then
    drop = true
  end
  if drop and id ~= GONE then
    if index == 'zset' then
      removed = removed + redis.call('ZREM', KEYS[1], id)
    else
      removed = removed + redis.call('SREM', KEYS[1], id)
    end
  end
end
if removed > 0 and not by_due then
  if index == 'zset' then redis.call('ZADD', KEYS[1], 0, GONE)
  else redis.call('SADD', KEYS[1], GONE) end
  if ttl > 0 then redis.call('PEXPIRE', KEYS[1], ttl) end
end
return {removed, retired}
