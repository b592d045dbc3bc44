"""The `notifier` command: dev, web, worker, clock, send-event.

Each command builds its settings once from the environment (and `.env`); a bad setting
stops it with one line naming the variable.
"""

from __future__ import annotations

import argparse
import base64
import json
import logging
import os
import secrets
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from notifier.config import Secret, Settings
from notifier.errors import ConfigError, NotifierError

log = logging.getLogger("notifier")


def _kept_secret(path: Path, make: Callable[[], str]) -> Secret:
    """A secret made once into `path` (readable by its owner only), then read back; of two
    commands starting together, the second reads what the first wrote."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(make() + "\n")
    return Secret(path.read_text().strip())


def dev_webhook_secret(settings: Settings) -> Settings:
    """In development, a secret kept under `var/` stands in for NOTIFIER_WEBHOOK_SECRET."""
    if settings.webhook_secret is not None:
        return settings
    secret = _kept_secret(settings.var_dir / "webhook-secret",
                          lambda: "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode())
    return replace(settings, webhook_secret=secret)


def dev_api_token(settings: Settings) -> Settings:
    """In development, a token kept under `var/` stands in for NOTIFIER_API_TOKEN."""
    if settings.api_token is not None:
        return settings
    token = _kept_secret(settings.var_dir / "api-token", lambda: secrets.token_urlsafe(32))
    return replace(settings, api_token=token)


def _setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("dramatiq").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _start_worker(runtime: Any, threads: int) -> Any:
    import dramatiq

    from notifier.tasks import build_broker, declare_actors

    broker = build_broker(runtime.redis_url)
    declare_actors(broker, runtime)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return worker


def _runtime(settings: Settings) -> tuple[Any, Any]:
    from notifier.runtime import Runtime, resolve_redis_url

    url, embedded = resolve_redis_url(settings)
    return Runtime.build(settings, url), embedded


def cmd_dev(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from notifier.clock import Clock
    from notifier.tasks import build_broker
    from notifier.web import create_app

    settings = dev_api_token(dev_webhook_secret(settings))
    runtime, embedded = _runtime(settings)
    worker = _start_worker(runtime, settings.worker_threads)
    broker = build_broker(runtime.redis_url)
    stop = threading.Event()
    clock = threading.Thread(target=Clock(runtime.store, broker, lease_s=settings.lease_s,
                                          jobs=runtime.jobs).run,
                             args=(stop,), daemon=True)
    clock.start()
    app = create_app(settings, runtime.store, broker)
    print(f"notifier dev: listening on http://127.0.0.1:{args.port}  (API docs at /docs)\n"
          f"  redis:  {runtime.redis_url}\n"
          f"  outbox: {settings.outbox_dir.resolve()}/messages.jsonl\n"
          "  client messages wait for 08:00 client-local during quiet hours (21:00-08:00);\n"
          f"  try:    notifier send-event examples/appointment-scheduled.json "
          f"--url http://127.0.0.1:{args.port}\n"
          "  then see them planned:\n"
          f"  curl -H 'Authorization: Bearer {settings.api_token}' "
          f"http://127.0.0.1:{args.port}/v1/clients/client-1/notifications\n", flush=True)
    # uvicorn re-raises the signal that stopped it once it has shut down; for SIGTERM the
    # default action would kill us before the clean-up below, leaving Redis running.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    try:
        uvicorn.run(app, host=args.host, port=args.port, log_level="warning")
    finally:
        stop.set()
        clock.join(timeout=5)
        worker.stop()
        if embedded is not None:
            embedded.stop()


def cmd_web(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from notifier.tasks import build_broker
    from notifier.web import create_app

    runtime, _ = _runtime(settings)
    app = create_app(settings, runtime.store, build_broker(runtime.redis_url))
    uvicorn.run(app, host=args.host, port=args.port, log_level="info")


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    runtime, _ = _runtime(settings)
    stop = _stop_event()
    worker = _start_worker(runtime, args.threads or settings.worker_threads)
    log.info("worker running with %d threads", args.threads or settings.worker_threads)
    stop.wait()
    worker.stop()


def cmd_clock(args: argparse.Namespace, settings: Settings) -> None:
    from notifier.clock import Clock
    from notifier.tasks import build_broker

    runtime, _ = _runtime(settings)
    stop = _stop_event()
    Clock(runtime.store, build_broker(runtime.redis_url), lease_s=settings.lease_s,
          jobs=runtime.jobs).run(stop)


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> None:
    from zoneinfo import ZoneInfo

    from notifier.digest import provider_zones
    from notifier.jobs import PROVIDER_ZONE, next_fire

    runtime, _ = _runtime(settings)
    now = datetime.now(UTC)
    for job in runtime.jobs:
        zones = sorted(provider_zones(runtime.store)) if job.zone == PROVIDER_ZONE else [job.zone]
        print(f"{job.name}  cron '{job.cron}'  zone {job.zone}")
        if not zones:
            print("  no providers known yet: nothing to fire")
        for zone in zones:
            fire = next_fire(job.cron, now, ZoneInfo(zone))
            local = fire.astimezone(ZoneInfo(zone))
            print(f"  {zone:<24} next {local:%a %Y-%m-%d %H:%M %Z}  ({fire:%Y-%m-%d %H:%M} UTC)")


def cmd_jobs_run(args: argparse.Namespace, settings: Settings) -> None:
    """Run a job now, for the fire it stands for: in each zone, the job's most recent
    scheduled fire (see `notifier.digest.manual_fires`). Its digests carry that fire's ids,
    so a run repeats nothing the clock or an earlier run already planned for it."""
    from notifier.digest import run_manually

    runtime, _ = _runtime(settings)
    if args.name not in {job.name for job in runtime.jobs}:
        known = ", ".join(job.name for job in runtime.jobs)
        raise ConfigError(f"jobs run: no job named {args.name!r} (known: {known})")
    runs = run_manually(runtime.store, runtime.jobs, args.name, datetime.now(UTC))
    if not runs:
        print(f"{args.name}: no providers known yet: nothing to plan")
    for run in runs:
        print(f"{args.name}: {run.describe()}")
    if any(run.planned for run in runs):
        print("a running worker and clock send what was planned")


def cmd_preview(args: argparse.Namespace, settings: Settings) -> None:
    from notifier.preview import preview, preview_all

    if args.all:
        print(preview_all(settings))
        return
    if not args.kind:
        raise ConfigError("preview: name a KIND, or give --all")
    print(preview(settings, args.kind, args.locale, args.channel))


def sign_event(secret: str, body: bytes, event_id: str, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for `body`, signed as `POST /v1/events` verifies them."""
    from notifier.web import sign_webhook

    timestamp = int(now.timestamp())
    return {"webhook-id": event_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_webhook(secret, event_id, timestamp, body),
            "content-type": "application/json"}


def cmd_send_event(args: argparse.Namespace, settings: Settings) -> None:
    import httpx

    settings = dev_webhook_secret(settings)
    secret = settings.require_webhook_secret()
    url = (args.url or settings.public_url).rstrip("/") + "/v1/events"
    failed = False
    for path in args.files:
        try:
            loaded = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{path}: cannot read an event from it ({exc})") from None
        for event in loaded if isinstance(loaded, list) else [loaded]:
            body = json.dumps(event).encode()
            headers = sign_event(secret, body, str(event.get("id", "")), datetime.now(UTC))
            answer = httpx.post(url, content=body, headers=headers, timeout=10)
            print(f"{event.get('id')} {event.get('type')}: {answer.status_code} {answer.text}")
            failed = failed or answer.status_code >= 400
    if failed:
        sys.exit(1)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="notifier", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    dev = sub.add_parser("dev", help="web, worker and clock in one process (embedded Redis)")
    dev.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    dev.add_argument("--host", default="127.0.0.1")
    dev.set_defaults(func=cmd_dev)
    web = sub.add_parser("web", help="the HTTP API")
    web.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    web.add_argument("--host", default="0.0.0.0")
    web.set_defaults(func=cmd_web)
    worker = sub.add_parser("worker", help="apply events and deliver notifications")
    worker.add_argument("--threads", type=int, default=0)
    worker.set_defaults(func=cmd_worker)
    clock = sub.add_parser("clock", help="claim due notifications, sweep leases")
    clock.set_defaults(func=cmd_clock)
    jobs = sub.add_parser("jobs", help="cron jobs: list them, or run one now")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True)
    jobs_sub.add_parser("list", help="each job's next fire time per zone").set_defaults(
        func=cmd_jobs_list)
    run = jobs_sub.add_parser(
        "run", help="run a job now, for its most recent scheduled fire in each zone")
    run.add_argument("name")
    run.set_defaults(func=cmd_jobs_run)
    preview = sub.add_parser("preview", help="render a template with sample data; --all: "
                             "every kind, channel and locale with worst-case data and what "
                             "each SMS costs")
    preview.add_argument("kind", nargs="?")
    preview.add_argument("--all", action="store_true")
    preview.add_argument("--locale", default="en")
    preview.add_argument("--channel", choices=("sms", "email"), default=None)
    preview.set_defaults(func=cmd_preview)
    send = sub.add_parser("send-event", help="sign and post events from JSON files")
    send.add_argument("files", nargs="+", help="a file holding one event or a list of them")
    send.add_argument("--url", help="base URL (default NOTIFIER_PUBLIC_URL)")
    send.set_defaults(func=cmd_send_event)
    return parser


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    _setup_logging(os.environ.get("NOTIFIER_LOG_LEVEL", "INFO"))
    try:
        settings = Settings.from_env()
        args.func(args, settings)
    except NotifierError as exc:
        print(f"notifier: {exc}", file=sys.stderr)
        sys.exit(2)
