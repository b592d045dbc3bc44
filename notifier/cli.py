"""The `notifier` command: dev, web, worker, clock, jobs, preview, notifications, send-event,
webhooks (list, test, replay).

Each command builds its settings once from the environment (and `.env`); a bad setting,
a wrong argument or a service that does not answer stops it with one line saying what is
wrong and what to do, and a non-zero exit.
"""

from __future__ import annotations

import argparse
import base64
import errno
import json
import logging
import os
import secrets
import shlex
import shutil
import signal
import socket
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from notifier.config import Settings, project_dir, reveal
from notifier.errors import NotifierError, StoreError, UsageError
from notifier.intake.json_body import repeated_keys
from notifier.webhooks.endpoints import Endpoint

log = logging.getLogger("notifier")


def private_dir(path: Path) -> Path:
    """`path` made if need be, readable by its owner only: what goes under `var/` holds
    contact details, secrets and the Redis data. A directory an older version made with
    the umask's mode is tightened as well (mkdir's mode applies only to a new one)."""
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


def _kept_secret(path: Path, make: Callable[[], str]) -> SecretStr:
    """A secret made once into `path` (readable by its owner only), then read back; of two
    commands starting together, the second reads what the first wrote."""
    if not path.exists():
        private_dir(path.parent)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as f:
                f.write(make() + "\n")
    return SecretStr(path.read_text().strip())


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


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("dramatiq").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # The Twilio SDK logs every request at INFO, with the account URL and headers: noise
    # at best. Asked for DEBUG, a person is debugging a send and wants to see them.
    logging.getLogger("twilio").setLevel(logging.NOTSET if level == "DEBUG"
                                         else logging.WARNING)


def _exit_on_signal(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)


def _stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def _start_worker(runtime: Any, threads: int) -> Any:
    import dramatiq

    from notifier.worker.actors import build_broker, declare_actors

    broker = build_broker(runtime.redis_url)
    declare_actors(broker, runtime)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return worker


def _redacted(url: str) -> str:
    """`url` without a password, to show in an error."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def _runtime(settings: Settings, *, serving: bool = False) -> Iterator[Any]:
    """The runtime, on Redis that answers; the embedded Redis is released on the way out,
    so a command that started it for itself stops it (see `EmbeddedRedis.release`). A
    `serving` command (dev, web, worker, clock) logs Redis's fsync policy first; one-shot
    commands keep their output to their answer."""
    from notifier.ledger.durability import log_fsync_policy
    from notifier.runtime import Runtime, resolve_redis_url

    url, embedded = resolve_redis_url(settings)
    try:
        runtime = Runtime.build(settings, url)
        try:
            runtime.redis.ping()
            if serving:
                log_fsync_policy(runtime.redis)
        except StoreError as exc:
            raise UsageError(f"cannot reach Redis at {_redacted(url)} ({exc}): start it, or "
                             "point NOTIFIER_REDIS_URL at one that runs (unset, the "
                             "embedded one is used)") from None
        yield runtime
    finally:
        if embedded is not None:
            embedded.release()


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on `host:port`, made before anything else starts, so a busy port
    is said in one line rather than after a banner, a clock and a worker have started."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    # As uvicorn does: a restart right after a stop need not wait out TIME_WAIT. A port
    # another process listens on still refuses the bind (no SO_REUSEPORT).
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise UsageError(f"port {port} is in use: another notifier dev or web may be "
                             f"running; stop it, or pass --port {port + 1}") from None
        raise UsageError(f"cannot listen on {host}:{port} ({exc.strerror}): pass another "
                         "--host or --port") from None
    return sock


def server_log_level(level: str, at_least: str = "DEBUG") -> str:
    """uvicorn's log level (its access log is at INFO): NOTIFIER_LOG_LEVEL (`level`), or
    `at_least` when that is more severe (`notifier dev` keeps its console to the banner)."""
    severity = max(logging.getLevelNamesMapping()[level], logging.getLevelNamesMapping()[at_least])
    return logging.getLevelName(severity).lower()


def server_config(app: Any, log_level: str, settings: Settings | None = None,
                  **listen: Any) -> Any:
    """uvicorn's `Config` for the app (`notifier web` and `dev`, and the ingest benchmark):
    `log_level` as `server_log_level` gives it, lower case; the request read deadline and
    the connection cap of `settings` (default: the defaults); `listen` as uvicorn takes it
    (`host`, `port`), or none when the caller passes a socket to `Server.run`.

    uvicorn's access log is on only at `debug`. At `info` it would be a second line per
    request beside `POST /v1/events`'s own, which names the event and its answer; a line
    per request to the other routes (health checks, the read API) is what a reverse proxy
    or load balancer in front already logs. Both lines cost the web CPU per request.

    Above `web_max_connections` connections (and requests in progress) uvicorn answers
    every new request 503 and closes its connection: memory stays bounded however many
    clients hold connections open, each for at most the read deadline (`web.server`)."""
    import uvicorn

    from notifier.web.server import deadline_protocol

    settings = settings or Settings()
    return uvicorn.Config(app, log_level=log_level, access_log=log_level == "debug",
                          http=deadline_protocol(settings.web_read_timeout_s),
                          limit_concurrency=settings.web_max_connections, **listen)


def _serve(app: Any, sock: socket.socket, log_level: str, settings: Settings) -> None:
    import uvicorn

    # uvicorn re-raises the signal that stopped it once it has shut down; for SIGTERM the
    # default action would kill us before the callers' clean-up, leaving Redis running.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    uvicorn.Server(server_config(app, log_level, settings)).run(sockets=[sock])


def shell_path(path: str | Path, cwd: Path | None = None) -> str:
    """`path` as typed in a shell started in `cwd`: relative when it lies below, quoted."""
    here = Path(os.path.abspath(cwd or Path.cwd()))
    absolute = Path(os.path.abspath(path))  # abspath: .venv/bin/python is a symlink, kept
    try:
        relative = absolute.relative_to(here)
    except ValueError:
        return shlex.quote(str(absolute))
    text = str(relative)
    return shlex.quote(text if "/" in text else f"./{text}")


def _same_file(a: str | Path | None, b: str | Path) -> bool:
    try:
        return a is not None and os.path.samefile(a, b)
    except OSError:
        return False


def invocation(argv0: str | None = None, executable: str | None = None,
               cwd: Path | None = None) -> str:
    """How to run `notifier` again from the shell this one was started from: `notifier`
    only when that is on PATH as this very script (a venv not activated is not), else the
    script's path (`.venv/bin/notifier`), or `python -m notifier` as it was started."""
    script = Path(argv0 if argv0 is not None else sys.argv[0])
    if script.name == "notifier":
        if _same_file(shutil.which("notifier"), script):
            return "notifier"
        return shell_path(script, cwd)
    python = executable or sys.executable
    if _same_file(shutil.which("python3"), python):
        return "python3 -m notifier"
    return f"{shell_path(python, cwd)} -m notifier"


EXAMPLE_EVENTS = "appointment-scheduled.json"
EXAMPLE_CLIENT = "client-1"


def example_events() -> str:
    """The example events as a path to type: `examples/…` where the shell has them (a
    checkout), else where this code has them (the checkout's, or the wheel's copy)."""
    here = Path("examples") / EXAMPLE_EVENTS
    return shell_path(here if here.is_file() else project_dir("examples") / EXAMPLE_EVENTS)


def dev_banner(settings: Settings, host: str, port: int, redis_url: str) -> str:
    """What `notifier dev` prints: where it listens and the first commands to try, each
    one ready to paste into the shell `notifier dev` was started from."""
    me = invocation()
    base = f"http://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{port}"
    # send-event posts to NOTIFIER_PUBLIC_URL unless told otherwise.
    default_target = urlsplit(settings.public_url)
    url = "" if (default_target.hostname in ("localhost", "127.0.0.1")
                 and default_target.port == port and not default_target.path) \
        else f" --url {base}"
    outbox = shell_path(settings.outbox_dir / "messages.jsonl")
    lines = [
        f"notifier dev: listening on {base}  (API docs at /docs)",
        f"  redis:  {_redacted(redis_url)}",
        f"  outbox: {outbox}",
        "In another terminal, from this directory:",
        f"  {me} send-event {example_events()}{url}",
        f"  {me} notifications {EXAMPLE_CLIENT}    # what is planned for the client, and why",
        f"  tail {outbox}    # what was sent",
        f"  curl -H 'Authorization: Bearer {reveal(settings.api_token)}' "
        f"{base}/v1/clients/{EXAMPLE_CLIENT}/notifications",
        "Client messages wait for 08:00 client-local during quiet hours (21:00-08:00): at "
        "night the confirmation shows as scheduled for the morning, not in the outbox.",
    ]
    return "\n".join(lines) + "\n"


def cmd_dev(args: argparse.Namespace, settings: Settings) -> None:
    from notifier.web.app import create_app
    from notifier.webhooks.dispatcher import Dispatcher
    from notifier.worker.actors import build_broker
    from notifier.worker.clock import Clock

    sock = bind(args.host, args.port)
    try:
        settings = dev_api_token(dev_webhook_secret(settings))
        with _runtime(settings, serving=True) as runtime:
            worker = _start_worker(runtime, settings.worker_threads)
            broker = build_broker(runtime.redis_url)
            stop = threading.Event()
            clock = threading.Thread(target=Clock(runtime.store, broker,
                                                  lease_s=settings.lease_s,
                                                  jobs=runtime.jobs,
                                                  webhooks=runtime.webhooks).run,
                                     args=(stop,), daemon=True)
            clock.start()
            webhooks = threading.Thread(target=Dispatcher(runtime.webhooks).serve,
                                        args=(stop,), daemon=True)
            webhooks.start()
            try:
                app = create_app(settings, runtime.store, broker)
                print(dev_banner(settings, args.host, args.port, runtime.redis_url),
                      flush=True)
                _serve(app, sock, server_log_level(settings.log_level, at_least="WARNING"),
                       settings)
            finally:
                stop.set()
                clock.join(timeout=5)
                webhooks.join(timeout=5)
                worker.stop()
    finally:
        sock.close()


def cmd_web(args: argparse.Namespace, settings: Settings) -> None:
    from notifier.web.app import create_app
    from notifier.worker.actors import build_broker

    sock = bind(args.host, args.port)
    try:
        with _runtime(settings, serving=True) as runtime:
            _serve(create_app(settings, runtime.store, build_broker(runtime.redis_url)), sock,
                   server_log_level(settings.log_level), settings)
    finally:
        sock.close()


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    """Run the worker: in this process with `--processes 1`, else as a parent of that
    many worker processes (`notifier.worker.processes`), exiting non-zero when one of
    them ended on its own."""
    from notifier.webhooks.dispatcher import Dispatcher
    from notifier.worker.processes import default_processes, run_processes

    threads = args.threads or settings.worker_threads
    processes = args.processes or settings.worker_processes or default_processes()
    status = 0
    with _runtime(settings, serving=True) as runtime:
        def serve(stop: threading.Event) -> None:
            worker = _start_worker(runtime, threads)
            log.info("worker running with %d threads", threads)
            stop.wait()
            worker.stop()

        # Delivery webhooks are sent by a process of their own (with one process, threads
        # of their own): a slow receiver never holds a thread that delivers notifications.
        webhooks = Dispatcher(runtime.webhooks).serve
        if processes == 1:
            stop = _stop_event()
            sender = threading.Thread(target=webhooks, args=(stop,), name="webhooks")
            sender.start()
            serve(stop)
            sender.join()
        else:
            log.info("worker running: %d processes of %d threads", processes, threads)
            also = [("webhooks", webhooks)] if runtime.webhooks.endpoints else []
            status = run_processes(processes, serve, also=also)
    if status:
        sys.exit(status)


def cmd_clock(args: argparse.Namespace, settings: Settings) -> None:
    from notifier.worker.actors import build_broker
    from notifier.worker.clock import Clock

    with _runtime(settings, serving=True) as runtime:
        stop = _stop_event()
        Clock(runtime.store, build_broker(runtime.redis_url), lease_s=settings.lease_s,
              jobs=runtime.jobs, webhooks=runtime.webhooks).run(stop)


def cmd_jobs_list(args: argparse.Namespace, settings: Settings) -> None:
    from zoneinfo import ZoneInfo

    from notifier.worker.cron import PROVIDER_ZONE, next_fire
    from notifier.worker.digests import provider_zones

    with _runtime(settings) as runtime:
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

    with _runtime(settings) as runtime:
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

    with _runtime(settings) as runtime:
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


def sign_event(secret: str, body: bytes, event_id: str, now: datetime) -> dict[str, str]:
    """The Standard Webhooks headers for `body`, signed as `POST /v1/events` verifies them."""
    from notifier.web.signatures import sign_webhook

    timestamp = int(now.timestamp())
    return {"webhook-id": event_id, "webhook-timestamp": str(timestamp),
            "webhook-signature": sign_webhook(secret, event_id, timestamp, body),
            "content-type": "application/json"}


def read_events(path: str) -> list[dict[str, Any]]:
    """The events of a file (one event, or a JSON list of them), each an object with an
    `id`: the id is also the `webhook-id` the signature covers, so without it the service
    could only refuse the event."""
    try:
        text = Path(path).read_text()
        loaded = json.loads(text)
        repeated = repeated_keys(text)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read it ({exc.strerror}): check the path") from None
    except ValueError as exc:
        raise UsageError(f"{path}: not valid JSON ({exc}): a file holds one event or a "
                         "JSON list of them") from None
    if repeated:
        # json.loads keeps the last copy; sending that would sign something other than the
        # file, and the service refuses a repeated key anyway.
        raise UsageError(f"{path}: {', '.join(repeated)}: given more than once in its "
                         "object; give each key once")
    events = loaded if isinstance(loaded, list) else [loaded]
    if not events:
        raise UsageError(f"{path}: an empty list: a file holds one event or a JSON list of "
                         "them")
    for number, event in enumerate(events, start=1):
        where = f"{path}: event {number}" if isinstance(loaded, list) else path
        if not isinstance(event, dict):
            raise UsageError(f"{where}: not a JSON object: an event is an object with id, "
                             "type, occurred_at and data")
        if not isinstance(event.get("id"), str) or not event["id"].strip():
            raise UsageError(f"{where}: no \"id\": every event needs a unique string id "
                             "(it is also the webhook-id it is signed with)")
    return events


def cmd_send_event(args: argparse.Namespace, settings: Settings) -> None:
    import httpx

    settings = dev_webhook_secret(settings)
    secret = settings.require_webhook_secret()
    base = (args.url or settings.public_url).rstrip("/")
    target = urlsplit(base)
    if target.scheme not in ("http", "https") or not target.hostname:
        raise UsageError(f"--url {base!r} is not an http(s) URL: pass the service's base URL, "
                         "such as http://127.0.0.1:8000")
    url = base + "/v1/events"
    # Every file is read and checked before anything is sent: a mistake in the third file
    # does not leave the first two half-sent.
    batches = [read_events(path) for path in args.files]
    failed = False
    for event in (event for batch in batches for event in batch):
        body = json.dumps(event).encode()
        headers = sign_event(secret, body, event["id"], datetime.now(UTC))
        try:
            answer = httpx.post(url, content=body, headers=headers, timeout=10)
        except httpx.HTTPError as exc:
            raise UsageError(f"nothing answers at {base} ({exc or type(exc).__name__}): "
                             f"start it (make run, or {invocation()} dev), or pass --url") \
                from None
        print(f"{event['id']} {event.get('type')}: {answer.status_code} {answer.text}")
        failed = failed or answer.status_code >= 400
    if failed:
        sys.exit(1)


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
    with _runtime(settings) as runtime:
        disabled = {s.name: s.disabled_at for s in runtime.webhooks.statuses(now)}
        for endpoint in endpoints:
            count = runtime.webhooks.replay(endpoint, since, now)
            was = disabled.get(endpoint.name)
            enabled = "" if was is None else \
                f"; enabled again (disabled since {was:%Y-%m-%d %H:%M:%S} UTC)"
            print(f"{endpoint.name}: {count} failed message{'' if count == 1 else 's'} "
                  f"made since {since:%Y-%m-%d %H:%M:%S} UTC requeued{enabled}")
    print("a running worker sends them")


def _port(value: str) -> int:
    """A TCP port number, for argparse: one line naming the range otherwise."""
    if not value.isdigit() or not 1 <= int(value) <= 65535:
        raise argparse.ArgumentTypeError(f"{value!r} is not a port (1 to 65535)")
    return int(value)


def _threads(value: str) -> int:
    """A worker's thread count, for argparse: at least one."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a thread count (1 or more)")
    return int(value)


def _processes(value: str) -> int:
    """A worker's process count, for argparse: at least one."""
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"{value!r} is not a process count (1 or more)")
    return int(value)


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in one line: what is wrong, and where to read more."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="notifier", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    dev = sub.add_parser("dev", help="web, worker and clock in one process (embedded Redis)")
    dev.add_argument("--port", type=_port, default=int(os.environ.get("PORT", "8000")))
    dev.add_argument("--host", default="127.0.0.1")
    dev.set_defaults(func=cmd_dev)
    web = sub.add_parser("web", help="the HTTP API")
    web.add_argument("--port", type=_port, default=int(os.environ.get("PORT", "8000")))
    web.add_argument("--host", default="0.0.0.0")
    web.set_defaults(func=cmd_web)
    worker = sub.add_parser("worker", help="apply events and deliver notifications")
    worker.add_argument("--threads", type=_threads, default=0,
                        help="threads per worker process (default NOTIFIER_WORKER_THREADS)")
    worker.add_argument("--processes", type=_processes, default=0,
                        help="worker processes (default NOTIFIER_WORKER_PROCESSES, else one "
                             "per core)")
    worker.set_defaults(func=cmd_worker)
    clock = sub.add_parser("clock", help="claim due notifications, sweep leases")
    clock.set_defaults(func=cmd_clock)
    jobs = sub.add_parser("jobs", help="cron jobs: list them, or run one now")
    jobs_sub = jobs.add_subparsers(dest="jobs_command", required=True, metavar="list|run")
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
    notifications = sub.add_parser(
        "notifications", help="what is planned for a client, and why")
    notifications.add_argument("client_id")
    notifications.set_defaults(func=cmd_notifications)
    send = sub.add_parser("send-event", help="sign and post events from JSON files")
    send.add_argument("files", nargs="+", help="a file holding one event or a list of them")
    send.add_argument("--url", help="base URL (default NOTIFIER_PUBLIC_URL)")
    send.set_defaults(func=cmd_send_event)
    webhooks = sub.add_parser("webhooks", help="delivery webhooks to integrators: list the "
                              "endpoints, test one, replay failed messages")
    webhooks_sub = webhooks.add_subparsers(dest="webhooks_command", required=True,
                                           metavar="list|test|replay")
    webhooks_sub.add_parser("list", help="each endpoint, its events and limits (never its "
                            "secret)").set_defaults(func=cmd_webhooks_list)
    test = webhooks_sub.add_parser("test", help="send one signed webhook.test message to an "
                                   "endpoint now; exit 1 unless it answers 2xx")
    test.add_argument("name")
    test.set_defaults(func=cmd_webhooks_test)
    replay = webhooks_sub.add_parser("replay", help="enable an endpoint again and requeue "
                                     "its messages that failed since TIME")
    replay.add_argument("--since", required=True, metavar="TIME",
                        help="an RFC 3339 instant (2026-11-30T15:00:00Z) or a duration "
                             "before now (45m, 2h, 3d)")
    replay.add_argument("--endpoint", metavar="NAME", help="only this endpoint (default: "
                        "each one)")
    replay.set_defaults(func=cmd_webhooks_replay)
    return parser


def _fail(message: str, code: int = 2) -> NoReturn:
    print(f"notifier: {message}", file=sys.stderr)
    sys.exit(code)


def main(argv: list[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    debug = False
    try:
        settings = Settings.from_env()
        debug = settings.log_level == "DEBUG"
        setup_logging(settings.log_level)
        args.func(args, settings)
    except NotifierError as exc:
        _fail(str(exc))
    except KeyboardInterrupt:
        sys.exit(130)  # Ctrl-C: the shell's convention, and no traceback for it
    except Exception as exc:
        # A newcomer needs one line; whoever debugs asks for DEBUG and gets the traceback.
        if debug:
            raise
        _fail(f"unexpected error: {type(exc).__name__}: {exc} (NOTIFIER_LOG_LEVEL=DEBUG "
              "shows the traceback)", code=1)
