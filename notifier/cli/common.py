"""What the commands share: a runtime on Redis that answers, development secrets kept
under `var/`, logging and signals, the listening socket and uvicorn's configuration, and
how to name the `notifier` command in what they print."""

from __future__ import annotations

import base64
import errno
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
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from pydantic import SecretStr

from notifier.config import Settings
from notifier.errors import StoreError, UsageError
from notifier.ledger.redis_urls import SINGLE_SCHEMES, is_cluster_url, shown_url


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


def _token() -> str:
    return secrets.token_urlsafe(32)


def _webhook_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


#: The secrets `notifier dev` stands in for when unset, by settings field: the file under
#: `var/` each is kept in, and how one is made.
DEV_SECRETS: dict[str, tuple[str, Callable[[], str]]] = {
    "webhook_secret": ("webhook-secret", _webhook_secret),  # NOTIFIER_WEBHOOK_SECRET
    "api_token": ("api-token", _token),                     # NOTIFIER_API_TOKEN
    "console_secret": ("console-secret", _token),           # NOTIFIER_CONSOLE_SECRET
    "fhir_token": ("fhir-token", _token),                   # NOTIFIER_FHIR_TOKEN
}


def dev_secret(settings: Settings, field: str) -> Settings:
    """In development, a secret kept under `var/` stands in for the setting `field` (one
    of `DEV_SECRETS`) when it is unset; `settings` as they are when it is set."""
    if getattr(settings, field) is not None:
        return settings
    name, make = DEV_SECRETS[field]
    # Typed loosely: `field` names one of the SecretStr | None fields of DEV_SECRETS.
    change: dict[str, Any] = {field: _kept_secret(settings.var_dir / name, make)}
    return replace(settings, **change)


def dev_secrets(settings: Settings) -> Settings:
    """`dev_secret` of every field of `DEV_SECRETS`: what `notifier dev` runs with."""
    for field in DEV_SECRETS:
        settings = dev_secret(settings, field)
    return settings


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


def stop_event() -> threading.Event:
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    return stop


def start_worker(runtime: Any, threads: int) -> Any:
    import dramatiq

    from notifier.worker.actors import build_broker, declare_actors

    broker = build_broker(runtime.broker_url)
    declare_actors(broker, runtime)
    worker = dramatiq.Worker(broker, worker_threads=threads, worker_timeout=100)
    worker.start()
    return worker


def redacted(url: str) -> str:
    """`url` without a password, to show in an error."""
    if is_cluster_url(url):
        # Its netloc is a list of nodes, which urlsplit's host and port cannot read.
        return shown_url(url)
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username or ''}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


@contextmanager
def open_runtime(settings: Settings, *, serving: bool = False) -> Iterator[Any]:
    """The runtime, on Redis that answers; the embedded Redis is released on the way out,
    so a command that started it for itself stops it (see `EmbeddedRedis.release`). A
    `serving` command (dev, web, worker, clock) logs Redis's fsync policy first; one-shot
    commands keep their output to their answer."""
    from notifier.ledger.connect import is_cluster_node
    from notifier.ledger.durability import log_fsync_policy
    from notifier.ledger.shard_marks import open_shards
    from notifier.runtime import Runtime, resolve_redis_url

    url, embedded = resolve_redis_url(settings)
    try:
        try:
            # On a cluster this reads the slot map, so it is inside.
            runtime = Runtime.build(settings, url)
            runtime.redis.ping()
            # A cluster's node answers PING, then MOVED for most keys: say which URL to use.
            if not is_cluster_url(url) and is_cluster_node(url):
                raise UsageError(
                    f"NOTIFIER_REDIS_URL: {redacted(url)} is a node of a Redis Cluster: name "
                    "the cluster as redis+cluster://host:port,host:port (any of its "
                    "masters), with NOTIFIER_BROKER_URL for the queue")
            # The shard count is part of the data: another count stops start-up here. A
            # shard that lost its data is said (CRITICAL), not refused: the others work.
            open_shards(runtime.redis, settings.ledger_shards)
            check_broker(settings.broker_url, url)
            if serving:
                log_fsync_policy(runtime.redis)
        except StoreError as exc:
            raise UsageError(f"cannot reach Redis at {redacted(url)} ({exc}): start it, or "
                             "point NOTIFIER_REDIS_URL at one that runs (unset, the "
                             "embedded one is used)") from None
        yield runtime
    finally:
        if embedded is not None:
            embedded.release()


def check_broker(broker_url: str | None, ledger_url: str) -> None:
    """Refuse a Redis queue (NOTIFIER_BROKER_URL) that is a node of a Redis Cluster:
    dramatiq's Redis broker runs scripts over keys of many slots, which a cluster node
    answers with MOVED, for ever. Raises `UsageError` saying so; a queue that does not
    answer is not checked (README: the worker keeps trying)."""
    if broker_url is None or broker_url == ledger_url or is_cluster_url(broker_url) \
            or urlsplit(broker_url).scheme not in SINGLE_SCHEMES:
        return
    from notifier.ledger.connect import is_cluster_node

    if is_cluster_node(broker_url):
        raise UsageError(
            f"NOTIFIER_BROKER_URL: {redacted(broker_url)} is a node of a Redis Cluster, and "
            "the queue cannot be on a cluster (dramatiq's Redis broker is not "
            "cluster-aware): point it at a RabbitMQ (amqp://...) or a plain Redis of the "
            "queue's own (redis://...)")


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


def serve_app(app: Any, sock: socket.socket, log_level: str, settings: Settings) -> None:
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
