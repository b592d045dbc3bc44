"""Clients of the web: an integrator that retries, and hostile ones.

`ingest` posts signed events as an integrator's webhook sender does: a connection error, a
timeout or a 503 is tried again (same event id, signed anew) until the service answers 202
(`accepted`) or 200 (`duplicate`: stored by an earlier try whose answer was lost); anything
else is a refusal and is not retried. `hostile` opens connections that drip their request
a byte a second, and others that hang up half-way through their body.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

import httpx

from notifier.cli.send_event import sign_event

#: Pause between tries of one event, seconds (a webhook sender backs off longer; the
#: experiments are short).
RETRY_PAUSE_S = 0.1


@dataclass
class Ingested:
    """What the integrator saw: events answered 202 or 200 by id, the latency of each
    answered try (seconds), tries that failed (connection, timeout, 503), and refusals
    (status and event id)."""

    acked: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)
    retried: int = 0
    refused: list[tuple[int, str]] = field(default_factory=list)


def ingest(port: int, secret: str, bodies: Sequence[bytes], threads: int = 4,
           pace_s: float = 0.0, timeout_s: float = 10.0, give_up_s: float = 120.0
           ) -> Ingested:
    """Post every event of `bodies` from `threads` threads, each retried until answered,
    the k-th started no sooner than k * `pace_s` seconds from now (a steady stream rather
    than a burst); returns what was seen. An event still unanswered after `give_up_s` is
    left out of `acked`."""
    todo = iter(enumerate(bodies))
    lock = threading.Lock()
    seen = Ingested()
    began = time.monotonic()
    deadline = began + give_up_s

    def one(client: httpx.Client, body: bytes) -> None:
        event_id = json.loads(body)["id"]
        while time.monotonic() < deadline:
            headers = sign_event(secret, body, event_id, datetime.now(UTC))
            started = time.perf_counter()
            try:
                answer = client.post("/v1/events", content=body, headers=headers)
            except httpx.TransportError:
                answer = None
            with lock:
                if answer is not None and answer.status_code in (200, 202):
                    seen.acked[event_id] = answer.status_code
                    seen.latencies.append(time.perf_counter() - started)
                    return
                if answer is not None and answer.status_code != 503:
                    seen.refused.append((answer.status_code, event_id))
                    return
                seen.retried += 1
            time.sleep(RETRY_PAUSE_S)

    def run() -> None:
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=timeout_s) as client:
            while True:
                with lock:
                    k, body = next(todo, (0, b""))
                if not body:
                    return
                time.sleep(max(0.0, began + k * pace_s - time.monotonic()))
                one(client, body)

    workers = [threading.Thread(target=run, daemon=True) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    return seen


@dataclass
class Hostile:
    """What the hostile clients did: slow connections opened, how many of them the server
    closed, and connections that hung up mid-body."""

    slow: int = 0
    closed_by_server: int = 0
    vanished: int = 0


async def _slow(port: int, stop: asyncio.Event, seen: Hostile) -> None:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    seen.slow += 1
    try:
        writer.write(b"POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                     b"content-type: application/json\r\ncontent-length: 1000\r\n\r\n{")
        while not stop.is_set():
            await writer.drain()
            try:
                await asyncio.wait_for(reader.read(1024), timeout=1.0)
            except TimeoutError:
                writer.write(b" ")
                continue
            seen.closed_by_server += 1  # answered (408) and closed, or just closed
            return
    except ConnectionError:
        seen.closed_by_server += 1
    finally:
        writer.close()


async def _vanish(port: int, seen: Hostile) -> None:
    try:
        _, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return
    writer.write(b"POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\n"
                 b"content-type: application/json\r\ncontent-length: 4000\r\n\r\n"
                 + b"{" + b" " * 1000)
    await writer.drain()
    writer.transport.abort()
    seen.vanished += 1


async def _hostile(port: int, slow: int, vanish_per_s: float, stop: threading.Event,
                   seen: Hostile) -> None:
    quit_ = asyncio.Event()
    slowpokes = [asyncio.create_task(_slow(port, quit_, seen)) for _ in range(slow)]
    while not stop.is_set():
        await _vanish(port, seen)
        await asyncio.sleep(1 / vanish_per_s)
    quit_.set()
    await asyncio.gather(*slowpokes, return_exceptions=True)


def hostile(port: int, slow: int, vanish_per_s: float, stop: threading.Event,
            seen: Hostile) -> threading.Thread:
    """Start, in a thread, `slow` connections dripping a request body a byte a second, and
    a connection a `1 / vanish_per_s` seconds that sends half a body and resets; they stop
    when `stop` is set (join the thread returned). `seen` is filled as they go."""
    thread = threading.Thread(target=asyncio.run, daemon=True,
                              args=(_hostile(port, slow, vanish_per_s, stop, seen),))
    thread.start()
    return thread
