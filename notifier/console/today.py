"""The console's Today page, `GET /console/today` (audited as a view of `today`): what an
operator watches. The backlog by state, sends per hour over the last 24 hours per
channel, send lateness (sent - due) per channel, failures by provider code over the last
7 days, events set aside or held, events refused at the door (422) by type over the last 7
days, and providers whose open requests are past (or within
24 hours of) their escalation.

`gather` reads it all in one thread and four round trips, whatever the size of the
practice: the ledger's figures (`Reading.figures`), the delivery-report figures
(`Reports.figures`), the providers' ids, then one pipeline of the day counters
(`notifier.ledger.daily`), the webhook outbox's length and every provider's record and
queue. `today_view` turns that into what the template shows: pure, the operator's zone a
parameter.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool

from notifier.console.charts import Bar, bar_chart
from notifier.console.routes import Console
from notifier.console.times import operator_zone, short_time
from notifier.ledger.daily import (
    FAILED_DAYS,
    REFUSED_DAYS,
    DailyCounts,
    daily_replies,
    parse_daily,
    queue_daily,
)
from notifier.ledger.notifications import LATENESS_BUCKETS_S, Lateness
from notifier.ledger.reading import LedgerFigures
from notifier.ledger.record_store import all_record_keys, parse_record, raw_records
from notifier.ledger.records import ProviderQueueRecord, ProviderRecord
from notifier.ledger.reports import ReportFigures
from notifier.ledger.store import Store
from notifier.policy.figures import CHANNELS
from notifier.webhooks.outbox import queue_waiting

log = logging.getLogger(__name__)

#: How the page names each channel.
CHANNEL_NAMES = {"sms": "SMS", "email": "Email"}
#: Open items escalating within this long are listed as coming due.
COMING_DUE = timedelta(hours=24)


@dataclass(frozen=True)
class ProviderEscalations:
    """One provider's open items (refill requests, messages) by escalation: `overdue`
    past their window at `now`, `coming` within `COMING_DUE` of it; the earliest
    escalation time of each group (UTC), None when the group is empty."""

    provider_id: str
    name: str
    overdue: int
    coming: int
    first_overdue: datetime | None
    next_coming: datetime | None


@dataclass(frozen=True)
class Gathered:
    """What `gather` read at `now` (UTC)."""

    now: datetime
    figures: LedgerFigures
    reports: ReportFigures
    daily: DailyCounts
    #: changes waiting in the delivery-webhook outbox for the clock to fan out
    webhook_outbox: int
    escalations: list[ProviderEscalations]


def gather(store: Store, now: datetime) -> Gathered:
    """Everything the Today page shows, read at `now` in four round trips (the module's
    docstring lists them). A provider or queue record that no longer parses is left out
    (and logged): the page shows the rest. Raises `StoreUnavailable` / `StoreError`."""
    figures = store.figures()
    reports = store.reports.figures(now)
    ids = store.provider_ids()
    refs = [f"provider:{i}" for i in ids] + [f"provider_queue:{i}" for i in ids]
    with store.redis.pipeline(transaction=False) as pipe:
        queue_daily(pipe, now, store.keys)
        queue_waiting(pipe, store.keys)
        if refs:
            pipe.mget(all_record_keys(store.keys, refs))
        replies = pipe.execute()
    read = daily_replies(store.keys)
    daily = parse_daily(replies[:read], now, store.keys)
    shards = store.keys.count
    outbox = sum(int(n) for n in replies[read:read + shards])
    stored = replies[read + shards] if refs else []
    try:
        raw = raw_records(store.keys, refs, stored) if refs else {}
    except (ValidationError, ValueError, KeyError):
        log.warning("today: a provider queue's part does not parse; queues left out")
        raw = raw_records(store.keys, refs[:len(ids)], stored[:len(ids)])
    providers: dict[str, ProviderRecord] = {}
    queues: dict[str, ProviderQueueRecord] = {}
    for ref, value in raw.items():
        if value is None:
            continue
        kind, provider_id = ref.split(":", 1)
        try:
            record = parse_record(kind, value)
        except (ValidationError, ValueError, KeyError):
            log.warning("today: record %s does not parse; left out", ref)
            continue
        if isinstance(record, ProviderRecord):
            providers[provider_id] = record
        elif isinstance(record, ProviderQueueRecord):
            queues[provider_id] = record
    return Gathered(now=now, figures=figures, reports=reports, daily=daily,
                    webhook_outbox=outbox,
                    escalations=escalations(providers, queues, now))


def escalations(providers: Mapping[str, ProviderRecord],
                queues: Mapping[str, ProviderQueueRecord], now: datetime
                ) -> list[ProviderEscalations]:
    """Per provider with an open item past its escalation at `now` or within
    `COMING_DUE` of it: the counts and earliest times; most overdue first, then soonest
    coming, then by name. A queue without a provider record is named by its id."""
    found = []
    for provider_id, queue in queues.items():
        overdue = sorted(i.escalates_at for i in queue.items.values() if i.escalates_at <= now)
        coming = sorted(i.escalates_at for i in queue.items.values()
                        if now < i.escalates_at <= now + COMING_DUE)
        if not overdue and not coming:
            continue
        record = providers.get(provider_id)
        found.append(ProviderEscalations(
            provider_id=provider_id, name=record.provider.name if record else provider_id,
            overdue=len(overdue), coming=len(coming),
            first_overdue=overdue[0] if overdue else None,
            next_coming=coming[0] if coming else None))
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(found, key=lambda e: (-e.overdue, e.next_coming or far, e.name))


#: The lateness chart's bars: each bucket between the previous bound and its own.
LATENESS_LABELS = ("≤ 1 s", "1-5 s", "5-15 s", "15 s-1 min", "1-5 min", "5-15 min",
                   "15 min-1 h", "> 1 h")
LATENESS_TICKS = ("1s", "5s", "15s", "1m", "5m", "15m", "1h", ">1h")


def lateness_bars(series: list[Lateness]) -> list[Bar]:
    """The sends of `series` (one channel's, any kinds) per lateness band: the cumulative
    buckets summed, then differenced; the last band is past the last bound."""
    cumulative = [sum(dict(s.buckets).get(float(b), 0) for s in series)
                  for b in LATENESS_BUCKETS_S]
    total = sum(s.count for s in series)
    bands = [c - p for c, p in zip([*cumulative, total], [0, *cumulative], strict=True)]
    return [Bar(label, n, tick) for label, tick, n in
            zip(LATENESS_LABELS, LATENESS_TICKS, bands, strict=True)]


def sends_bars(daily: DailyCounts, channel: str, now: datetime, zone: ZoneInfo) -> list[Bar]:
    """A bar per hour of the 24 ending with `now`'s, oldest first, of `channel`'s sends;
    a tick every 6 hours, the hour in `zone`."""
    last = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    bars = []
    for back in range(23, -1, -1):
        start = last - timedelta(hours=back)
        local = start.astimezone(zone)
        bars.append(Bar(f"{local:%H}:00-{(local + timedelta(hours=1)):%H}:00",
                        daily.sent.get((start, channel), 0),
                        f"{local:%H}" if back % 6 == 0 else ""))
    return bars


def today_view(g: Gathered, zone: ZoneInfo) -> dict[str, Any]:
    """The template's context from `g`, times in `zone`."""
    f, r = g.figures, g.reports
    backlog = [
        ("Scheduled", f.scheduled, "waiting for their due time"),
        ("In flight", f.in_flight, "claimed by a worker, being sent"),
        ("Awaiting a delivery report", r.awaiting, "sent through Twilio or SendGrid"),
        ("Report overdue", r.overdue, "past the wait: the repair job looks them up"),
        ("Events pending", f.events_pending, "accepted, not applied yet"),
        ("Events held", f.events_held, "waiting (at most 24 hours) for what they need"),
        ("Webhook changes to announce", g.webhook_outbox, "in the outbox"),
    ]
    channels = list(CHANNELS) + sorted({c for _, c in g.daily.sent} - set(CHANNELS))
    sends = []
    for channel in channels:
        bars = sends_bars(g.daily, channel, g.now, zone)
        total = sum(int(b.value) for b in bars)
        name = CHANNEL_NAMES.get(channel, channel)
        sends.append({"channel": channel, "total": total, "chart": bar_chart(
            f"sends-{channel}", f"{name} sends per hour, last 24 hours", bars,
            (" send", " sends"))})
    by_channel: dict[str, list[Lateness]] = {}
    for (_, channel), kind_series in g.figures.lateness.items():
        by_channel.setdefault(channel, []).append(kind_series)
    lateness = []
    # The same order as the sends' charts: SMS, email, then any other.
    order: dict[str, int] = {c: n for n, c in enumerate(CHANNELS)}
    for channel in sorted(by_channel, key=lambda c: (order.get(c, len(order)), c)):
        series = by_channel[channel]
        count = sum(s.count for s in series)
        mean = sum(s.total_s for s in series) / count if count else 0.0
        lateness.append({"channel": channel, "count": count, "mean_s": round(mean, 1),
                         "chart": bar_chart(f"late-{channel}",
                                            f"{CHANNEL_NAMES.get(channel, channel)} send "
                                            "lateness (sent - due)",
                                            lateness_bars(series), (" send", " sends"))})
    failures = sorted(g.daily.failed.items(), key=lambda kv: (-kv[1], kv[0]))
    set_aside = {status: g.figures.events_set_aside.get(status, 0)
                 for status in ("rejected", "failed")}
    set_aside |= g.figures.events_set_aside
    return {
        "now_shown": short_time(g.now, zone), "zone": zone.key,
        "backlog": backlog, "sends": sends, "lateness": lateness,
        "channel_names": CHANNEL_NAMES,
        "failures": [{"channel": c, "code": code, "count": n} for (c, code), n in failures],
        "failed_days": FAILED_DAYS, "set_aside": sorted(set_aside.items()),
        "events_held": f.events_held,
        "refused": sorted(g.daily.refused.items(), key=lambda kv: (-kv[1], kv[0])),
        "refused_days": REFUSED_DAYS,
        "escalations": [{"e": e, "first_overdue": short_time(e.first_overdue, zone)
                         if e.first_overdue else "", "next_coming":
                         short_time(e.next_coming, zone) if e.next_coming else ""}
                        for e in g.escalations],
    }


def routes(console: Console) -> APIRouter:
    """`GET /console/today`."""
    router = APIRouter()

    @router.get("/today")
    async def today(request: Request) -> Response:
        session = await console.viewer(request, "today")
        if isinstance(session, Response):
            return session
        gathered = await run_in_threadpool(gather, console.store, console.clock())
        return console.signed_in(session, "today.html",
                                 **today_view(gathered, operator_zone(console.settings)))

    return router
