-- Record one attempt to send a message: `delivered` (2xx), `retry` (due again at
-- ARGV[4]) or `failed` (given up). Only a message still `pending` changes: a late answer
-- after a replay or another sender's success is ignored. An endpoint that has failed
-- since ARGV[7] seconds ago (no success in between) is disabled: its messages wait,
-- unclaimed, until an operator replays them (`notifier webhooks replay`). Only a failure
-- of the endpoint (ARGV[8] '1': no answer, 429, 5xx) starts or continues that time: a
-- 4xx is the endpoint refusing one message, up and answering (found by QA: one 400 on a
-- Monday, then quiet days, disabled the endpoint at Saturday's first 503).
--
-- KEYS[1]     n:wh:{endpoint}:msg:{message id}
-- KEYS[2]     n:wh:{endpoint}:due
-- KEYS[3]     n:wh:{endpoint}:inflight
-- KEYS[4]     n:wh:{endpoint}:ep
-- KEYS[5]     n:wh:{endpoint}:pending      message ids not yet ended, by when made
--
-- ARGV[1]     the message id
-- ARGV[2]     the outcome: 'delivered', 'retry' or 'failed'
-- ARGV[3]     now, epoch seconds
-- ARGV[4]     when the next attempt is due (a retry), epoch seconds, or ''
-- ARGV[5]     the HTTP status answered, or '' (no answer: timeout, connection error)
-- ARGV[6]     what went wrong, briefly, or ''
-- ARGV[7]     how long an endpoint may fail every attempt before it is disabled, seconds
-- ARGV[8]     '1' when this failure is the endpoint's (no answer, 429, 5xx), else '0'
--
-- A message no longer kept (its hash expired) leaves the endpoint's pending set.
--
-- Returns 0 when the message was not pending (nothing changed), 1 when recorded, 2 when
-- recorded and the endpoint disabled by it.
local state = redis.call('HGET', KEYS[1], 'state')
redis.call('ZREM', KEYS[3], ARGV[1])
if not state then redis.call('ZREM', KEYS[5], ARGV[1]) end
if state ~= 'pending' then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'last_at', ARGV[3], 'last_status', ARGV[5], 'last_error', ARGV[6])
if ARGV[2] == 'delivered' then
  redis.call('HSET', KEYS[1], 'state', 'delivered', 'ended', ARGV[3])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'delivered', 1)
  redis.call('HDEL', KEYS[4], 'failing_since')
  return 1
end
if ARGV[2] == 'retry' then
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'retried', 1)
else
  redis.call('HSET', KEYS[1], 'state', 'failed', 'ended', ARGV[3])
  redis.call('ZREM', KEYS[2], ARGV[1])
  redis.call('ZREM', KEYS[5], ARGV[1])
  redis.call('HINCRBY', KEYS[4], 'failed', 1)
end
if ARGV[8] ~= '1' then return 1 end
redis.call('HSETNX', KEYS[4], 'failing_since', ARGV[3])
local since = tonumber(redis.call('HGET', KEYS[4], 'failing_since'))
if tonumber(ARGV[3]) - since >= tonumber(ARGV[7])
   and redis.call('HEXISTS', KEYS[4], 'disabled_at') == 0 then
  redis.call('HSET', KEYS[4], 'disabled_at', ARGV[3])
  return 2
end
return 1
