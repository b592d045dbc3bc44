"""The commands that run the service: `notifier dev` (web, worker and clock in one process),
`web`, `worker` and `clock`."""

from __future__ import annotations

import argparse
import logging
import sys
import threading
from pathlib import Path
from urllib.parse import urlsplit

from notifier.cli.common import (
    bind,
    dev_secrets,
    invocation,
    open_runtime,
    redacted,
    serve_app,
    server_log_level,
    shell_path,
    start_worker,
    stop_event,
)
from notifier.config import Settings, project_dir, reveal

log = logging.getLogger("notifier")


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
        f"  redis:  {redacted(redis_url)}",
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
    if settings.console_secret is not None:
        lines += [f"Operator console: {base}/console/  (the first operator, once: "
                  f"{me} console add-operator NAME)"]
    if settings.fhir_token is not None:
        lines += [f"FHIR intake: curl -H 'Content-Type: application/fhir+json' -H "
                  f"'Authorization: Bearer {reveal(settings.fhir_token)}' --data-binary "
                  f"@{shell_path(project_dir('examples') / 'fhir' / 'visit-bundle.json')} "
                  f"{base}/fhir/r4/notify"]
    return "\n".join(lines) + "\n"


def cmd_dev(args: argparse.Namespace, settings: Settings) -> None:
    from notifier.web.app import create_app
    from notifier.webhooks.dispatcher import Dispatcher
    from notifier.worker.actors import build_broker
    from notifier.worker.clock import Clock

    sock = bind(args.host, args.port)
    try:
        settings = dev_secrets(settings)
        with open_runtime(settings, serving=True) as runtime:
            worker = start_worker(runtime, settings.worker_threads)
            broker = build_broker(runtime.broker_url)
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
                serve_app(app, sock, server_log_level(settings.log_level, at_least="WARNING"),
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
        with open_runtime(settings, serving=True) as runtime:
            serve_app(create_app(settings, runtime.store, build_broker(runtime.broker_url)), sock,
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
    with open_runtime(settings, serving=True) as runtime:
        def serve(stop: threading.Event) -> None:
            worker = start_worker(runtime, threads)
            log.info("worker running with %d threads", threads)
            stop.wait()
            worker.stop()

        # Delivery webhooks are sent by a process of their own (with one process, threads
        # of their own): a slow receiver never holds a thread that delivers notifications.
        webhooks = Dispatcher(runtime.webhooks).serve
        if processes == 1:
            stop = stop_event()
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

    with open_runtime(settings, serving=True) as runtime:
        stop = stop_event()
        Clock(runtime.store, build_broker(runtime.broker_url), lease_s=settings.lease_s,
              jobs=runtime.jobs, webhooks=runtime.webhooks).run(stop)
