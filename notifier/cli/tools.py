"""The one-shot commands that look into the service and act on it: `notifier jobs list`
and `jobs run`, `notifications` (what is planned for a client, and why) and `preview`
(templates rendered with sample data)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from notifier.cli.common import invocation, open_runtime
from notifier.cli.serve import example_events
from notifier.config import Settings
from notifier.errors import UsageError


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> None:
    from zoneinfo import ZoneInfo

    from notifier.worker.cron import PROVIDER_ZONE, next_fire
    from notifier.worker.digests import provider_zones

    with open_runtime(settings) as runtime:
        now = datetime.now(UTC)
        for job in runtime.jobs:
            zones = (sorted(provider_zones(runtime.store)) if job.zone == PROVIDER_ZONE
                     else [job.zone])
            print(f"{job.name}  cron '{job.cron}'  zone {job.zone}")
            if not zones:
                print("  no providers known yet: nothing to fire")
            for zone in zones:
                fire = next_fire(job.cron, now, ZoneInfo(zone))
                local = fire.astimezone(ZoneInfo(zone))
                print(f"  {zone:<24} next {local:%a %Y-%m-%d %H:%M %Z}  "
                      f"({fire:%Y-%m-%d %H:%M} UTC)")


def cmd_jobs_run(args: argparse.Namespace, settings: Settings) -> None:
    """Run a job now, for the fire it stands for: in each zone, the job's most recent
    scheduled fire (see `notifier.worker.digests.manual_fires`). Its digests carry that fire's ids,
    so a run repeats nothing the clock or an earlier run already planned for it."""
    from notifier.worker.digests import run_manually

    with open_runtime(settings) as runtime:
        if args.name not in {job.name for job in runtime.jobs}:
            known = ", ".join(job.name for job in runtime.jobs)
            raise UsageError(f"jobs run: no job named {args.name!r} (known: {known}; "
                             f"`{invocation()} jobs list` shows them)")
        runs = run_manually(runtime.store, runtime.jobs, args.name, datetime.now(UTC))
    if not runs:
        print(f"{args.name}: no providers known yet: nothing to plan")
    for run in runs:
        print(f"{args.name}: {run.describe()}")
    if any(run.planned for run in runs):
        print("a running worker and clock send what was planned")


def _duration(delta: timedelta) -> str:
    minutes = max(0, int(delta.total_seconds() // 60))
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def notification_lines(views: list[Any], zone: Any, now: datetime, quiet: Any) -> list[str]:
    """One line per notification: state, when (client-local), kind, channel, and why it
    is where it is. A scheduled one says when it is due, and that quiet hours hold it when
    its due time is their end; the others say what the ledger recorded."""
    rows = []
    for view in views:
        due = view.due_at.astimezone(zone)
        if view.state == "scheduled":
            held = view.due_at > now and due.time() == quiet.end
            if view.due_at <= now:
                why = "due now: a running worker and clock send it"
            else:
                why = f"due in {_duration(view.due_at - now)}"
                if held:
                    why += (f", held by quiet hours ({quiet.start:%H:%M}-{quiet.end:%H:%M} "
                            "client-local)")
            # The worker records "quiet hours" when it holds one itself: said already.
            if view.reason and not (held and view.reason == "quiet hours"):
                why += f" ({view.reason})"
            when = due
        elif view.sent_at is not None:
            when = view.sent_at.astimezone(zone)
            why = "sent" + (f", {view.delivery}" if view.delivery else "")
            if view.reason:
                why += f": {view.reason}"
        else:
            when = due
            why = view.reason or "-"
        if view.code:
            why += f" (code {view.code})"
        rows.append((view.state, f"{when:%a %Y-%m-%d %H:%M %Z}", view.kind, view.channel, why))
    if not rows:
        return []
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    return ["  " + "  ".join([*(cell.ljust(width) for cell, width in zip(row, widths,
                                                                         strict=False)),
                              row[4]]) for row in rows]


def cmd_notifications(args: argparse.Namespace, settings: Settings) -> None:
    """What is planned for a client, and why, from the ledger itself. It reads the store
    rather than the read API: it works with no web server running and no token, and the
    read API is a thin view of this same call (`Store.notifications_for`, same window)."""
    from zoneinfo import ZoneInfo

    from notifier.ledger.records import ClientRecord
    from notifier.web.read_api import READ_WINDOW

    with open_runtime(settings) as runtime:
        now = datetime.now(UTC)
        record = runtime.store.load_record(f"client:{args.client_id}")
        views = runtime.store.notifications_for("client", args.client_id,
                                                since=now - READ_WINDOW)
    if not isinstance(record, ClientRecord) and not views:
        raise UsageError(f"no client {args.client_id!r} known yet: send its events first, "
                         f"e.g. {invocation()} send-event {example_events()}")
    zone = record.client.zone if isinstance(record, ClientRecord) else ZoneInfo("UTC")
    print(f"{args.client_id}: {len(views)} notification{'s' if len(views) != 1 else ''} "
          f"due from {READ_WINDOW.days} days ago on (times {zone.key}, now "
          f"{now.astimezone(zone):%a %Y-%m-%d %H:%M %Z})")
    for line in notification_lines(views, zone, now, runtime.policy.quiet_hours):
        print(line)


def cmd_preview(args: argparse.Namespace, settings: Settings) -> None:
    from typing import get_args

    from notifier.delivery.preview import preview, preview_all
    from notifier.intake.events import Client

    if args.all:
        table, over = preview_all(settings)
        print(table)
        if over:
            # As a linter does: a template over the budget would stop the service's
            # start-up, so a script or CI checking templates must see it fail.
            sys.exit(1)
        return
    if not args.kind:
        raise UsageError("preview: name a KIND, or give --all (see notifier preview --help)")
    locales = get_args(Client.model_fields["locale"].annotation)
    if args.locale not in locales:
        raise UsageError(f"preview: no locale {args.locale!r}; templates exist in "
                         f"{', '.join(locales)} (pass --locale {locales[0]})")
    print(preview(settings, args.kind, args.locale, args.channel))
