"""Benchmark: Redis bytes per notification over its whole life, and per client: what the
README's sizing page ("Sizing: a million clients") multiplies.

How to run:

    python -m bench.retention              # 2,000 bookings (12,000 notifications)
    python -m bench.retention --quick      # 300 bookings (what `make bench` runs)

How it works: a private redis-server (no persistence). In process, since memory does not
depend on how the events arrive: the workload's clients and providers, then N bookings
(`bench.memory.bookings`: 6 notifications each, SMS and email), each stored and applied
as the worker applies it (`intake.apply.apply_stored_event`). MEMORY USAGE is summed per
key family (the key up to its second `:`) after each stage of a notification's life:

1. **pending**: applied, on the schedule;
2. **ended**: each begun and finished as sent (an SMS with a Twilio-like SID, encoding and
   segments; an email with a SendGrid-like id) and given its final delivery report
   (`delivered`), the webhook outbox drained: kept whole for NOTIFIER_RETENTION_DAYS;
3. **retired**: the clock's trimming run at the retention's end (a day past it): each
   notification a content-free row, kept NOTIFIER_HISTORY_DAYS (its hash expires then).

How to read it: "bytes per notification" at a stage is the families that grow with
notifications (`n:notif`, `n:schedule`, `n:by-recipient`, `n:by-entity`,
`n:awaiting-report`) over the notifications; events (`n:event`, kept 30 days once
applied) are per event, and records (`n:rec`, the client sets) per booking and per
client, since each grows with its own count. MEMORY USAGE leaves out Redis's main
dictionary (about 50-70 B per key: `used_memory` deltas show it), so the sizing page adds
that per key. Memory is deterministic; the machine's load does not change it. Results also
go to var/bench/retention.json.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import common, workload
from bench.memory import bookings, breakdown
from notifier.config import HISTORY_DAYS, RETENTION_DAYS
from notifier.intake.apply import apply_stored_event
from notifier.intake.events import parse_event
from notifier.ledger.store import Store
from notifier.policy.figures import load_policy
from notifier.webhooks.outbox import WebhookOutbox

#: The families that grow with notifications; the rest grow with events, records, clients.
NOTIFICATION_FAMILIES = ("n:notif", "n:schedule", "n:by-recipient", "n:by-entity",
                         "n:awaiting-report", "n:inflight")
EVENT_FAMILIES = ("n:event",)


def apply_all(store: Store, raws: list[bytes], now: datetime) -> int:
    """Store and apply each event as the web and the worker do; returns how many."""
    policy = load_policy(common.ROOT / "schedules")
    for raw in raws:
        event = parse_event(raw)
        store.store_event(event.id, raw, now)
        apply_stored_event(store, event.id, policy, now)
    return len(raws)


def end_all(store: Store, ids: list[str], now: datetime) -> int:
    """Send each (as the deliverer records a send) and report it delivered; returns how
    many were sent."""
    sent = 0
    for i, notification_id in enumerate(ids):
        fields = store.notification(notification_id)
        due = datetime.fromtimestamp(float(fields["due"]), UTC)
        begun = store.schedule.begin(notification_id, due, lease_s=30)
        if begun.verdict != "ok":
            continue
        receipt = (f"SM{i:032x}" if fields["channel"] == "sms"
                   else f"W7rC{i:018x}")  # the X-Message-Id SendGrid answers
        extra: dict[str, Any] = {"sms_encoding": "GSM-7", "sms_segments": 1,
                                 "provider_segments": 1} if fields["channel"] == "sms" else {}
        store.schedule.finish(notification_id, "sent", lease=begun.lease,
                              report_at=due.timestamp() + 3600, sent_at=due.timestamp() + 0.4,
                              receipt=receipt, **extra)
        store.schedule.record_delivery(notification_id, "delivered", "", due + timedelta(
            seconds=5), receipt)
        sent += 1
    return sent


def per(parts: dict[str, tuple[int, int]], families: tuple[str, ...]) -> tuple[int, int]:
    """(keys, bytes) of `families` in a breakdown."""
    keys = sum(parts.get(f, (0, 0))[0] for f in families)
    size = sum(parts.get(f, (0, 0))[1] for f in families)
    return keys, size


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bookings", type=int, default=None,
                        help="appointment.scheduled events (default 2,000; --quick 300)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    count = args.bookings or (300 if args.quick else 2_000)
    now = datetime.now(UTC)
    stages: dict[str, dict[str, tuple[int, int]]] = {}
    with common.redis_server() as server:
        r = server.client(0)
        store = Store(r, keep_finished_s=RETENTION_DAYS * 86400,
                      history_s=HISTORY_DAYS * 86400)
        outbox = WebhookOutbox(r, (), store.keys)
        people = workload.people_events(now, workload.midday_zone(now), "ret")
        events = apply_all(store, people + bookings(count, now), now)
        ids = [i.decode() for i in r.scan_iter(match="*notif:*", count=1000)]
        ids = [key.split("notif:", 1)[1] for key in ids]
        while outbox.fan_out(now):
            pass
        stages["pending"] = breakdown(r)
        sent = end_all(store, ids, now)
        while outbox.fan_out(now):
            pass
        stages["ended"] = breakdown(r)
        later = now + timedelta(days=RETENTION_DAYS + 12)  # every due time + the retention
        cursor = -1
        while cursor:
            run = store.trimmer.run(later, max(cursor, 0), pages=100)
            cursor = run.cursor
        stages["retired"] = breakdown(r)
        box = common.machine(server.url)
    notifications = len(ids)
    rows: list[list[Any]] = []
    results: dict[str, Any] = {"bookings": count, "events": events,
                               "notifications": notifications, "sent": sent}
    for stage, parts in stages.items():
        keys, size = per(parts, NOTIFICATION_FAMILIES)
        rows.append([f"per notification, {stage}", f"{size / notifications:,.0f} B",
                     f"{keys / notifications:.2f}"])
        results[stage] = {"bytes_per_notification": size / notifications,
                          "keys_per_notification": keys / notifications,
                          "families": {k: {"keys": v[0], "bytes": v[1]}
                                       for k, v in parts.items()}}
    event_keys, event_bytes = per(stages["pending"], EVENT_FAMILIES)
    rows.append(["per event applied (kept 30 days)", f"{event_bytes / event_keys:,.0f} B", "1"])
    record_keys, record_bytes = per(stages["ended"], ("n:rec",))
    rows.append(["records, per booking", f"{record_bytes / count:,.0f} B",
                 f"{record_keys / count:.2f}"])
    results["event_bytes"] = event_bytes / event_keys
    results["record_bytes_per_booking"] = record_bytes / count
    body = common.table(["figure", "MEMORY USAGE", "keys"], rows)
    common.report("retention", "retention: Redis bytes per notification over its life", box,
                  body, results,
                  [f"{count:,} bookings, {notifications:,} notifications ({sent:,} sent and "
                   f"reported delivered); retention {RETENTION_DAYS} days, history "
                   f"{HISTORY_DAYS} days (the defaults).",
                   "MEMORY USAGE leaves out Redis's main dictionary: add about 60 B per key."])


if __name__ == "__main__":
    main()
