-- Begin sending: `scheduled` and due -> `sending` with a lease (off the schedule, in case
-- a redelivered message got here before the clock claimed it again). A notification found
-- in `sending` whose lease has run out belongs to a sender that died inside the send; it
-- is handed back as `recover`.
--
-- The lease's end, as written here, is its token (fencing): `finish` and `reschedule` take
-- it and refuse a worker whose lease was taken over. A lease is taken over only at or after
-- its end, so the new one ends later: the worker that lost it never holds the new token.
--
-- KEYS[1]     n:{s}:notif:{id}
-- KEYS[2]     n:{s}:inflight
-- KEYS[3]     n:{s}:schedule
--
-- ARGV[1]     the notification id
-- ARGV[2]     now, epoch seconds
-- ARGV[3]     the lease's end, epoch seconds
-- ARGV[4]     how early a notification may be begun, seconds
--
-- Returns {verdict, field, value, ...}: `ok` or `recover` with the hash's fields (`lease`
-- among them: the token);
-- `missing`, `not_due`, `busy` or the state found, alone. A begun send is noted in the
-- notification's history (`sending`, with the attempt's number: `_webhook_emit.lua`).
-- #include _webhook_emit
local state = redis.call('HGET', KEYS[1], 'state')
local now = tonumber(ARGV[2])
if not state then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'missing'}
end
local verdict
if state == 'scheduled' then
  if tonumber(redis.call('HGET', KEYS[1], 'due')) > now + tonumber(ARGV[4]) then
    return {'not_due'}
  end
  verdict = 'ok'
elseif state == 'sending' then
  if tonumber(redis.call('HGET', KEYS[1], 'lease') or '0') > now then return {'busy'} end
  verdict = 'recover'
else
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {state}
end
redis.call('HSET', KEYS[1], 'state', 'sending', 'lease', ARGV[3])
local attempt = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
local note = 'attempt ' .. attempt
if verdict == 'recover' then note = note .. ', lease taken over' end
note_history(KEYS[1], 'sending', note)
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
redis.call('ZREM', KEYS[3], ARGV[1])
local out = {verdict}
for _, v in ipairs(redis.call('HGETALL', KEYS[1])) do out[#out + 1] = v end
return out
