"""The receivers the webhooks benchmark sends to: a lean one that answers 204 at once (run
as its own process, `python -m bench.webhook_sinks PORT`, so it does not share a GIL with
the senders it measures), and a dead one that accepts connections and never answers.

Neither verifies signatures: `tests/webhooks/receiver.py` does, in the tests; here the
receiver must not be what limits the rate.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class _NoContent(BaseHTTPRequestHandler):
    """204 to every POST (its body read and dropped) and to GET /healthz; keep-alive."""

    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("content-length", 0)))
        self._answer()

    def do_GET(self) -> None:  # noqa: N802
        self._answer()

    def _answer(self) -> None:
        self.send_response_only(204)
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        """Silent: a line per request would cost more than the answer."""


def serve_sink(port: int) -> None:
    """Answer 204 on 127.0.0.1:`port` until killed, a thread per connection."""
    server = ThreadingHTTPServer(("127.0.0.1", port), _NoContent)
    server.daemon_threads = True
    server.serve_forever()


class DeadReceiver:
    """A receiver that accepts every connection and never answers: each attempt holds its
    sender for the endpoint's whole timeout, the worst a receiver can do. `url` to send
    to; `held`: connections accepted so far. `release()` closes them all (the senders see
    a dropped connection at once) and stops accepting."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0), backlog=64)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}/dead"
        self._listener.settimeout(0.1)
        self._held: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, name="dead-receiver", daemon=True)
        self._thread.start()

    @property
    def held(self) -> int:
        with self._lock:
            return len(self._held)

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            # The request (under 1 KB) waits in the socket's buffer, never read.
            with self._lock:
                self._held.append(conn)

    def release(self) -> None:
        """Close every held connection and stop accepting; again is harmless."""
        self._stop.set()
        self._thread.join(timeout=5)
        self._listener.close()
        with self._lock:
            for conn in self._held:
                conn.close()


@contextmanager
def dead_receiver() -> Iterator[DeadReceiver]:
    """A `DeadReceiver`, released on the way out."""
    receiver = DeadReceiver()
    try:
        yield receiver
    finally:
        receiver.release()


if __name__ == "__main__":
    serve_sink(int(sys.argv[1]))
