-- Fan the outbox's first entries out to the endpoints that want them: each becomes one
-- message per endpoint, due at once (or, for a disabled endpoint, recorded `failed` for a
-- later replay), and the entries leave the outbox, all in one step. The caller read the
-- entries and built the messages; the outbox's head must still be what it read (another
-- clock may have fanned it out meanwhile: then nothing changes and 0 is returned). A
-- message already recorded is left as it is, so a repeat is harmless.
--
-- KEYS[1]     n:wh:outbox
-- KEYS[2..]   per message, five keys: n:wh:msg:{endpoint}:{message id} (its hash),
--             n:wh:due:{endpoint}, n:wh:log:{endpoint}, n:wh:pending:{endpoint},
--             n:wh:ep:{endpoint} (a message failed at once counts in its `failed`)
--
-- ARGV[1]     how many entries leave the outbox
-- ARGV[2]     the first of them, as read
-- ARGV[3]     now, epoch seconds
-- ARGV[4]     how long a message is kept, seconds
-- ARGV[5..]   per message, four values: its id, its body, '1' when due (else recorded
--             `failed`: the endpoint is disabled), its event type
--
-- Returns 1 when the entries were fanned out, 0 when the outbox's head was not ARGV[2].
if redis.call('LINDEX', KEYS[1], 0) ~= ARGV[2] then return 0 end
for m = 0, (#KEYS - 1) / 5 - 1 do
  local hash, due, log, pending, ep = 2 + 5 * m, 3 + 5 * m, 4 + 5 * m, 5 + 5 * m, 6 + 5 * m
  local a = 5 + 4 * m
  if redis.call('EXISTS', KEYS[hash]) == 0 then
    local state = 'pending'
    if ARGV[a + 2] ~= '1' then state = 'failed' end
    redis.call('HSET', KEYS[hash], 'body', ARGV[a + 1], 'type', ARGV[a + 3],
               'created', ARGV[3], 'state', state, 'attempts', 0)
    if state == 'failed' then
      redis.call('HSET', KEYS[hash], 'last_error', 'endpoint disabled', 'ended', ARGV[3])
      redis.call('HINCRBY', KEYS[ep], 'failed', 1)
    else
      redis.call('ZADD', KEYS[due], ARGV[3], ARGV[a])
      redis.call('ZADD', KEYS[pending], ARGV[3], ARGV[a])
    end
    redis.call('EXPIRE', KEYS[hash], ARGV[4])
    redis.call('ZADD', KEYS[log], ARGV[3], ARGV[a])
  end
end
redis.call('LTRIM', KEYS[1], ARGV[1], -1)
return 1
