-- Add one endpoint's messages, fanned out from one shard's outbox entries
-- (`notifier.webhooks.outbox.WebhookOutbox.fan_out`): each is due at once, or, while the
-- endpoint is disabled, recorded `failed` for a later replay. A message whose hash exists
-- is left as it is, so fanning the same entries out again (another clock read them too,
-- or the fan-out stopped before it trimmed the outbox) adds nothing twice: message ids
-- come from the entries. Only this endpoint's keys: one slot (`n:wh:{endpoint}:…`).
--
-- KEYS[1]     n:wh:{endpoint}:due          message ids by when their next attempt is due
-- KEYS[2]     n:wh:{endpoint}:log          every id kept, by when made
-- KEYS[3]     n:wh:{endpoint}:pending      ids not yet ended, by when made
-- KEYS[4]     n:wh:{endpoint}:ep           its counts and health (a message failed at
--                                          once, the endpoint disabled, counts `failed`)
-- KEYS[5..]   per message, n:wh:{endpoint}:msg:{message id}, its hash
--
-- ARGV[1]     now, epoch seconds
-- ARGV[2]     how long a message is kept, seconds
-- ARGV[3..]   per message, three values: its id, its body, its event type
--
-- Returns how many messages were added (0 when all of them were there).
local state = 'pending'
if redis.call('HEXISTS', KEYS[4], 'disabled_at') == 1 then state = 'failed' end
local added = 0
for m = 5, #KEYS do
  local a = 3 * m - 12
  if redis.call('EXISTS', KEYS[m]) == 0 then
    redis.call('HSET', KEYS[m], 'body', ARGV[a + 1], 'type', ARGV[a + 2],
               'created', ARGV[1], 'state', state, 'attempts', 0)
    if state == 'failed' then
      redis.call('HSET', KEYS[m], 'last_error', 'endpoint disabled', 'ended', ARGV[1])
      redis.call('HINCRBY', KEYS[4], 'failed', 1)
    else
      redis.call('ZADD', KEYS[1], ARGV[1], ARGV[a])
      redis.call('ZADD', KEYS[3], ARGV[1], ARGV[a])
    end
    redis.call('EXPIRE', KEYS[m], ARGV[2])
    redis.call('ZADD', KEYS[2], ARGV[1], ARGV[a])
    added = added + 1
  end
end
return added
