"""`notifier webhooks`: the delivery-webhook endpoints listed, one sent a test message, the
messages that failed requeued (`list`, `test`, `replay`)."""

from __future__ import annotations

import argparse
import sys
from datetime import UTC, datetime

from notifier.cli.common import open_runtime, shell_path
from notifier.config import Settings
from notifier.errors import UsageError
from notifier.webhooks.endpoints import Endpoint


def endpoint_lines(endpoints: tuple[Endpoint, ...], now: datetime) -> list[str]:
    """What `notifier webhooks list` prints for each endpoint, never a secret: its name and
    URL, then its events, limits, previous secret (`now` tells whether it still signs) and
    description, indented."""
    lines = []
    for endpoint in endpoints:
        until = endpoint.previous_until
        if until is None:
            previous = "none"
        elif now < until:
            previous = f"signs too until {until:%Y-%m-%d %H:%M:%S} UTC"
        else:
            previous = f"expired {until:%Y-%m-%d %H:%M:%S} UTC (unset it)"
        lines += [f"{endpoint.name}  {endpoint.url}",
                  f"  events: {', '.join(sorted(endpoint.events))}",
                  f"  max_in_flight {endpoint.max_in_flight}, timeout_s {endpoint.timeout_s:g}",
                  f"  previous secret: {previous}"]
        if endpoint.description:
            lines.append(f"  description: {endpoint.description}")
    return lines


def cmd_webhooks_list(args: argparse.Namespace, settings: Settings) -> None:
    """The delivery-webhook endpoints as configured (validated at start-up, as every
    command's settings are); needs no Redis."""
    if not settings.webhook_endpoints:
        print("no webhook endpoints: none in NOTIFIER_WEBHOOK_ENDPOINTS or in "
              f"{shell_path(settings.schedules_dir / 'webhooks.toml')} (or the file "
              "NOTIFIER_WEBHOOKS_FILE names); see schedules/webhooks.example.toml")
        return
    for line in endpoint_lines(settings.webhook_endpoints, datetime.now(UTC)):
        print(line)


def cmd_webhooks_test(args: argparse.Namespace, settings: Settings) -> None:
    """Send one signed `webhook.test` message to an endpoint at once (not through the
    outbox: no Redis needed, nothing recorded) and say what it answered; exit 1 unless 2xx."""
    import httpx

    from notifier.webhooks.operations import named, send_test

    endpoint = named(settings.webhook_endpoints, args.name, "test")
    with httpx.Client(follow_redirects=False) as client:
        result = send_test(client, endpoint, datetime.now(UTC))
    print(result.line(endpoint.name))
    if not result.delivered:
        sys.exit(1)


def cmd_webhooks_replay(args: argparse.Namespace, settings: Settings) -> None:
    """Enable an endpoint (or each) again and make its messages that failed since `--since`
    pending again (`WebhookOutbox.replay`); a running worker sends them."""
    from notifier.webhooks.operations import named, parse_since

    now = datetime.now(UTC)
    since = parse_since(args.since, now)
    if args.endpoint is not None:
        endpoints: tuple[Endpoint, ...] = (
            named(settings.webhook_endpoints, args.endpoint, "replay"),)
    elif settings.webhook_endpoints:
        endpoints = settings.webhook_endpoints
    else:
        raise UsageError("webhooks replay: no webhook endpoints are configured (see "
                         "`notifier webhooks list`)")
    with open_runtime(settings) as runtime:
        disabled = {s.name: s.disabled_at for s in runtime.webhooks.statuses(now)}
        for endpoint in endpoints:
            count = runtime.webhooks.replay(endpoint, since, now)
            was = disabled.get(endpoint.name)
            enabled = "" if was is None else \
                f"; enabled again (disabled since {was:%Y-%m-%d %H:%M:%S} UTC)"
            print(f"{endpoint.name}: {count} failed message{'' if count == 1 else 's'} "
                  f"made since {since:%Y-%m-%d %H:%M:%S} UTC requeued{enabled}")
    print("a running worker sends them")
