"""An operator's audit entry written in the same script as the change it records
(`lua/_audit.lua`), so that an action done always has its entry and one refused has none.

The console builds it (`notifier.console.audit.AuditLog.entry`); the ledger's actions take
it as an optional argument (`Schedule.cancel_one`, `PlanWriter.write_plan`,
`OptOuts.set_sms_opt_out`) and pass `args()` among the script's ARGV, and among its KEYS
the stream of the shard the change is in (`ShardKeys.audit`: a cancel's and a plan's
notification's shard), not `stream`, which names the console's own stream (`n:audit`,
where `OptOuts` still appends: opt-outs are in no shard yet).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class AuditWrite:
    """One entry of the stream `stream`: `operator` did `action` to `subject` at `at`
    (ISO 8601, UTC); `min_id`: the MINID (milliseconds since the epoch) the XADD trims
    the stream to, exactly: entries older than the retention go."""

    stream: str
    min_id: int
    operator: str
    action: str
    subject: str
    at: str

    def args(self) -> list[str]:
        """The five ARGV values `_audit.lua` reads, in its order."""
        return [str(self.min_id), self.operator, self.action, self.subject, self.at]
