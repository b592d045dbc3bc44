-- Opt a number out of SMS, or back in, and when that changes something, record
-- `client.opted_out` / `client.opted_in` in the delivery-webhook outbox in the same script
-- (`_webhook_emit.lua`): a number already opted out announces nothing again.
--
-- KEYS[1]     n:{0}:sms-optout             the numbers opted out
-- KEYS[2]     n:{0}:wh:outbox              the set's shard's outbox
-- KEYS[3]     n:{0}:wh:seq                 its counter
-- KEYS[4]     (optional) n:{0}:audit       shard 0's audit stream (`_audit.lua`)
--
-- ARGV[1]     the number (E.164)
-- ARGV[2]     '1' to opt out, '0' to opt in
-- ARGV[3]     the announcement's subject id (the first client with that number, or '')
-- ARGV[4]     the announcement's data, a JSON object
-- ARGV[5..]   (with KEYS[4]) the operator's audit entry, appended when it changes the set
--
-- Returns 1 when it changed the set, 0 when the number was already so.
-- #include _webhook_emit
-- #include _audit
local changed
if ARGV[2] == '1' then
  changed = redis.call('SADD', KEYS[1], ARGV[1])
else
  changed = redis.call('SREM', KEYS[1], ARGV[1])
end
if changed == 1 then
  local event_type = 'client.opted_in'
  if ARGV[2] == '1' then event_type = 'client.opted_out' end
  emit(KEYS[2], KEYS[3], event_type, ARGV[3], ARGV[4])
  if #KEYS == 4 then audit(KEYS[4], 5) end
end
return changed
