"""The `notifier` command: `build_parser` names every command and its arguments, `main` runs
one and turns an error into one line. The commands live by concern:

- `notifier.cli.serve`: `dev`, `web`, `worker` and `clock`, the processes of the service;
- `notifier.cli.tools`: `jobs list|run`, `notifications` and `preview`, one-shot commands
  that look into the service and act on it;
- `notifier.cli.send_event`: `send-event`, events signed and posted as an integrator would;
- `notifier.cli.webhooks`: `webhooks list|test|replay`, the delivery-webhook endpoints;
- `notifier.cli.console`: `console add-operator`, who may sign in to the operator console,
  and `console reindex`, the console's indexes filled for records stored before them;
- `notifier.cli.console`: `console add-operator`, who may sign in to the operator console;
- `notifier.cli.fhir`: `fhir map`, the events a FHIR resource or bundle becomes;
- `notifier.cli.common`: what they share (the runtime on Redis, development secrets,
  logging, the listening socket, how to name the command in what they print).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import NoReturn

from notifier.cli.common import setup_logging
from notifier.cli.console import cmd_console_add_operator, cmd_console_reindex
from notifier.cli.fhir import cmd_fhir_map
from notifier.cli.send_event import cmd_send_event
from notifier.cli.serve import cmd_clock, cmd_dev, cmd_web, cmd_worker
from notifier.cli.tools import cmd_jobs_list, cmd_jobs_run, cmd_notifications, cmd_preview
from notifier.cli.webhooks import cmd_webhooks_list, cmd_webhooks_replay, cmd_webhooks_test
from notifier.config import Settings
from notifier.errors import NotifierError

#: What `notifier --help` says above the commands.
DESCRIPTION = """\
The `notifier` command: dev, web, worker, clock, jobs, preview, notifications, send-event,
webhooks (list, test, replay), console (add-operator, reindex), fhir (map).

Each command builds its settings once from the environment (and `.env`); a bad setting,
a wrong argument or a service that does not answer stops it with one line saying what is
wrong and what to do, and a non-zero exit.
"""


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
    parser = _Parser(prog="notifier", description=DESCRIPTION)
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
    console = sub.add_parser("console", help="the operator console under /console: set an "
                             "operator's password, fill its indexes")
    console_sub = console.add_subparsers(dest="console_command", required=True,
                                         metavar="add-operator|reindex")
    add_operator = console_sub.add_parser(
        "add-operator", help="add an operator, or set their password again (asked twice; "
        "read from standard input when it is not a terminal)")
    add_operator.add_argument("name")
    add_operator.set_defaults(func=cmd_console_add_operator)
    reindex = console_sub.add_parser(
        "reindex", help="index stored clients by email address and their appointments, "
        "prescriptions, refill requests and messages under them (for records stored "
        "before this version; safe to run again)")
    reindex.set_defaults(func=cmd_console_reindex)
    fhir = sub.add_parser("fhir", help="the FHIR R4 intake: map a resource or bundle to our "
                          "events")
    fhir_sub = fhir.add_subparsers(dest="fhir_command", required=True, metavar="map")
    fhir_map = fhir_sub.add_parser(
        "map", help="print the events (JSON lines) a FHIR resource or bundle becomes, the "
        "ignored resources and why on stderr; exit 1 naming each bad element by FHIRPath")
    fhir_map.add_argument("file")
    fhir_map.add_argument("--source", default="", help="the source (NOTIFIER_FHIR_SOURCES) "
                          "the EHR posts under: its ids are prefixed as there")
    fhir_map.set_defaults(func=cmd_fhir_map)
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
    except BrokenPipeError:
        # The reader went away (`notifier notifications c1 | head`): what it took was
        # printed. Python's advice: point stdout at devnull so the exit's flush is quiet.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        sys.exit(141)  # 128 + SIGPIPE, as a shell reports a command killed by it
    except Exception as exc:
        # A newcomer needs one line; whoever debugs asks for DEBUG and gets the traceback.
        if debug:
            raise
        _fail(f"unexpected error: {type(exc).__name__}: {exc} (NOTIFIER_LOG_LEVEL=DEBUG "
              "shows the traceback)", code=1)
