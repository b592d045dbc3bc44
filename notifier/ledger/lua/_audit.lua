-- Included, not run alone: a script that can record an operator's action says
-- `-- #include _audit` and, when its caller passes an audit entry, appends it with
-- `audit(stream key, first)` in the same script as the change, only when the change happens:
-- an action done is never left without its entry (Redis gone between two calls), and one
-- refused or done already by someone else is not recorded (`notifier.console.audit`).
--
-- KEYS        none of its own: the caller passes its KEYS entry for the audit stream
--             (`stream`): the stream of the shard its change is in, `n:{s}:audit`
--             (`ShardKeys.audit`), so that the script's keys stay one shard's
-- ARGV        the entry, five values from ARGV[first] on (`notifier.ledger.audit_write.
--             AuditWrite.args`): the MINID (milliseconds) that trims entries older than
--             the retention, exactly; the operator; the action; the subject; the time,
--             ISO 8601 UTC
--
-- Returns nothing: it defines `audit`.
local function audit(stream, first)
  redis.call('XADD', stream, 'MINID', ARGV[first], '*', 'operator', ARGV[first + 1],
             'action', ARGV[first + 2], 'subject', ARGV[first + 3], 'at', ARGV[first + 4])
end
