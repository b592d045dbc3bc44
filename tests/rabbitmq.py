"""A private RabbitMQ for the tests: the distribution's `rabbitmq-server`, started on free
loopback ports with its data, logs, configuration and Erlang cookie in a directory of its
own, and its own `epmd` (Erlang's port mapper) on a free port, so it neither meets nor
needs a RabbitMQ the machine may run. `make rabbitmq` installs the package; without it the
tests that use it fail, saying so (never skip).

Started, it takes about 5 s (Erlang's boot) on a 2-core machine; stopped, about 1.5 s.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

import pika
import pika.exceptions
import pytest

from notifier.ledger.embedded_redis import free_port
from notifier.worker.actors import DELIVER_QUEUE, EVENTS_QUEUE, JOBS_QUEUE, build_broker

#: Where Debian's package puts the server's own script: `/usr/sbin/rabbitmq-server` is a
#: wrapper that runs it as the `rabbitmq` user (from root) or refuses (anyone else).
DEBIAN_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
ADVICE = ("rabbitmq-server is not installed: run `make rabbitmq` (it installs Debian's "
          "rabbitmq-server package, as root or through sudo)")
#: How long the server may take to accept AMQP connections, seconds.
START_TIMEOUT_S = 60.0


def rabbitmq_server_binary(candidates: Sequence[str] = (DEBIAN_SERVER,)) -> str:
    """The first of `candidates` that exists, else `rabbitmq-server` on the PATH (another
    distribution's); fails the test with `ADVICE` when there is none."""
    for candidate in candidates:
        if os.access(candidate, os.X_OK):
            return candidate
    found = shutil.which("rabbitmq-server")
    if found is None or found == "/usr/sbin/rabbitmq-server":
        pytest.fail(ADVICE, pytrace=False)
    return found


def epmd_binary() -> str:
    """Erlang's `epmd`, which the rabbitmq-server package depends on."""
    found = shutil.which("epmd") or next(
        (str(p) for p in sorted(Path("/usr/lib/erlang").glob("erts-*/bin/epmd"))), None)
    if found is None:
        pytest.fail(ADVICE, pytrace=False)
    return found


class OwnRabbitMQ:
    """A rabbitmq-server of the caller's own, its files under `directory`: `start()` waits
    until it accepts AMQP connections; `stop()` stops it and its `epmd`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port, dist_port, self.epmd_port = free_port(), free_port(), free_port()
        self.url = f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"
        config = directory / "rabbitmq.conf"
        # Loopback only; no plugins (the management plugin's web listener included).
        config.write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n")
        (directory / "enabled_plugins").write_text("[].\n")
        self.env = {
            **os.environ,
            "HOME": str(directory),  # the Erlang cookie is written there
            "RABBITMQ_NODENAME": f"notifier-test-{self.port}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(dist_port),
            "ERL_EPMD_PORT": str(self.epmd_port),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            # The node-to-node port on loopback too (Erlang binds every interface else).
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface "
                                                  "{127,0,0,1}",
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(config),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_PID_FILE": str(directory / "rabbitmq.pid"),
        }
        self.server: subprocess.Popen[bytes] | None = None
        self.epmd: subprocess.Popen[bytes] | None = None

    def start(self) -> OwnRabbitMQ:
        server = rabbitmq_server_binary()
        self.epmd = subprocess.Popen(
            [epmd_binary(), "-port", str(self.epmd_port), "-address", "127.0.0.1"],
            env=self.env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        with open(self.directory / "server.out", "wb") as out:
            self.server = subprocess.Popen([server], env=self.env, stdout=out,
                                           stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_for_amqp()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_for_amqp(self) -> None:
        assert self.server is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            try:
                pika.BlockingConnection(pika.URLParameters(self.url)).close()
                return
            except pika.exceptions.AMQPConnectionError:
                if self.server.poll() is not None:
                    raise AssertionError(
                        f"rabbitmq-server exited ({self.server.returncode}); see "
                        f"{self.directory / 'server.out'}") from None
                if time.monotonic() > deadline:
                    raise AssertionError(f"rabbitmq-server not accepting AMQP after "
                                         f"{START_TIMEOUT_S:.0f} s") from None
                time.sleep(0.2)

    def purge(self) -> None:
        """Empty the service's queues (and their delay and dead-letter queues), declaring
        them if need be: each test starts with nothing queued."""
        broker = build_broker(self.url)
        try:
            for queue in (EVENTS_QUEUE, DELIVER_QUEUE, JOBS_QUEUE):
                broker.declare_queue(queue, ensure=True)
            broker.flush_all()
        finally:
            broker.close()

    def stop(self) -> None:
        """SIGTERM: the server script stops the node (about 1.5 s); then its epmd."""
        if self.server is not None and self.server.poll() is None:
            self.server.terminate()
            try:
                self.server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.server.pid, signal.SIGKILL)
                self.server.wait(timeout=10)
        if self.epmd is not None and self.epmd.poll() is None:
            self.epmd.terminate()
            self.epmd.wait(timeout=10)
