"""Faults at the web's edge (issue 13): Redis away or refusing writes, slow and vanishing
clients, oversized bodies, too many connections. The real app served by uvicorn as
`notifier web` configures it (`notifier.cli.common.server_config`) on a real port, on a
redis-server of the test's own that it stops or fills; raw sockets where a client misbehaves.
"""

from __future__ import annotations

import base64
import json
import logging
import secrets
import socket
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
import uvicorn
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from redis.backoff import NoBackoff
from redis.retry import Retry
from twilio.request_validator import RequestValidator

from notifier.cli.common import server_config
from notifier.cli.send_event import sign_event
from notifier.config import Settings
from notifier.errors import ConfigError
from notifier.ledger.embedded_redis import free_port
from notifier.ledger.store import Store
from notifier.web.app import create_app
from notifier.web.events import UNAVAILABLE
from notifier.worker.actors import build_broker
from tests.conftest import OwnRedis
from tests.kit import client_upserted, daytime_zone
from tests.service import wait_for

SECRET = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
API_TOKEN = secrets.token_urlsafe(32)
TWILIO_TOKEN = "twilio-auth-token"
PUBLIC = "https://notifier.example.org"
READ = {"Authorization": f"Bearer {API_TOKEN}"}
SENDGRID_KEY = ec.generate_private_key(ec.SECP256R1())


def settings(**env: str) -> Settings:
    der = SENDGRID_KEY.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return Settings.from_env({
        "NOTIFIER_WEBHOOK_SECRET": SECRET, "NOTIFIER_API_TOKEN": API_TOKEN,
        "TWILIO_AUTH_TOKEN": TWILIO_TOKEN, "NOTIFIER_PUBLIC_URL": PUBLIC,
        "SENDGRID_WEBHOOK_PUBLIC_KEY": base64.b64encode(der).decode(), **env},
        dotenv=Path("/nonexistent"))


class Web:
    """The app on a real port as `notifier web` serves it: its base URL and port."""

    def __init__(self, redis_url: str, config: Settings) -> None:
        # No retries: a request to a stopped Redis fails at once rather than after backoff.
        self.client = redis.Redis.from_url(redis_url, retry=Retry(NoBackoff(), 0),
                                           socket_connect_timeout=1)
        self.broker = build_broker(redis_url)
        self.port = free_port()
        app = create_app(config, Store(self.client), self.broker)
        self.server = uvicorn.Server(server_config(app, "warning", config, host="127.0.0.1",
                                                   port=self.port))
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        wait_for(lambda: self.server.started, 10, "the web server")
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=20)

    def close(self) -> None:
        self.http.close()
        self.server.should_exit = True
        self.thread.join(timeout=10)
        self.broker.close()
        self.client.close()

    def raw(self) -> socket.socket:
        return socket.create_connection(("127.0.0.1", self.port), timeout=20)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    """A redis-server of the test's own, which it may kill or fill."""
    server = OwnRedis(tmp_path, "--appendonly", "no").start()
    yield server
    server.stop()


@pytest.fixture
def web(own_redis: OwnRedis) -> Iterator[Web]:
    served = Web(own_redis.url, settings(NOTIFIER_WEB_READ_TIMEOUT_S="1"))
    yield served
    served.close()


def event_body() -> tuple[bytes, dict[str, str]]:
    now = datetime.now(UTC)
    evt = client_upserted("c1", daytime_zone(now), now)
    body = json.dumps(evt).encode()
    return body, sign_event(SECRET, body, evt["id"], now)


def twilio_headers(path: str, form: dict[str, str]) -> dict[str, str]:
    return {"X-Twilio-Signature": RequestValidator(TWILIO_TOKEN).compute_signature(
        PUBLIC + path, form)}


def sendgrid_request(events: list[dict[str, Any]]) -> tuple[str, dict[str, str]]:
    body = json.dumps(events)
    timestamp = str(int(datetime.now(UTC).timestamp()))
    signature = base64.b64encode(SENDGRID_KEY.sign((timestamp + body).encode(),
                                                   ec.ECDSA(hashes.SHA256()))).decode()
    return body, {"X-Twilio-Email-Event-Webhook-Signature": signature,
                  "X-Twilio-Email-Event-Webhook-Timestamp": timestamp,
                  "Content-Type": "application/json"}


def every_route(http: httpx.Client) -> dict[str, httpx.Response]:
    """Each route that needs Redis, asked something that makes it use Redis."""
    body, headers = event_body()
    status = {"MessageStatus": "delivered", "MessageSid": "SM1"}
    inbound = {"From": "+14155550123", "Body": "C", "MessageSid": "SM2"}
    report, report_headers = sendgrid_request([{"notification_id": "n1", "event": "bounce"}])
    return {
        "/healthz": http.get("/healthz"),
        "/metrics": http.get("/metrics"),
        "notifications": http.get("/v1/clients/c1/notifications", headers=READ),
        "event status": http.get("/v1/events/evt-1", headers=READ),
        "short link": http.get("/j/abcdefghijklmnop"),
        "events": http.post("/v1/events", content=body, headers=headers),
        "twilio status": http.post("/twilio/status?n=n1", data=status,
                                   headers=twilio_headers("/twilio/status?n=n1", status)),
        "twilio inbound": http.post("/twilio/inbound", data=inbound,
                                    headers=twilio_headers("/twilio/inbound", inbound)),
        "sendgrid": http.post("/sendgrid/events", content=report, headers=report_headers),
    }


def problems(records: list[logging.LogRecord]) -> list[str]:
    """Log records at ERROR or with a traceback: what a fault must not produce."""
    return [r.getMessage() for r in records if r.levelno >= logging.ERROR or r.exc_info]


# Redis away or refusing ---------------------------------------------------------------------

def test_with_redis_down_every_route_is_503_with_retry_after_and_no_traceback(
        own_redis, web, caplog):
    assert all(a.status_code < 500 for a in every_route(web.http).values())
    own_redis.kill()
    with caplog.at_level(logging.INFO):
        answers = every_route(web.http)
    assert {route: a.status_code for route, a in answers.items()} == dict.fromkeys(answers, 503)
    assert all(a.headers.get("retry-after") == "5" for a in answers.values()), answers
    assert answers["/healthz"].json() == {"status": "unhealthy", "redis": "unreachable"}
    assert str(own_redis.port) not in answers["/healthz"].text, "the address is internal"
    assert answers["events"].json()["error"] == UNAVAILABLE
    assert problems(caplog.records) == []
    # One line for each route that used Redis (health checks are polled: not logged).
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == len(answers) - 1, [r.getMessage() for r in warned]


def test_with_redis_refusing_writes_the_writing_routes_are_503_not_500(own_redis, web, caplog):
    redis.Redis.from_url(own_redis.url).config_set("maxmemory", "1")  # noeviction: OOM
    with caplog.at_level(logging.INFO):
        answers = every_route(web.http)
    for route in ("events", "twilio status", "sendgrid"):
        assert answers[route].status_code == 503, (route, answers[route].text)
        assert answers[route].headers["retry-after"] == "5"
    assert answers["/healthz"].status_code == 200  # reads still work
    assert problems(caplog.records) == []


def test_an_invalid_event_is_422_whether_or_not_redis_takes_its_count(own_redis, web, caplog):
    """The count of events refused at the door (for the console's Today page) is a
    by-product: Redis refusing it (out of memory) or away leaves the 422 and a warning."""
    now = datetime.now(UTC)
    evt = client_upserted("c1", daytime_zone(now), now)
    evt["data"]["client"]["timezone"] = "Mars/Olympus_Mons"
    body = json.dumps(evt).encode()

    def post() -> httpx.Response:
        return web.http.post("/v1/events", content=body, headers=sign_event(
            SECRET, body, evt["id"], datetime.now(UTC)))

    assert post().status_code == 422
    redis.Redis.from_url(own_redis.url).config_set("maxmemory", "1")  # noeviction: OOM
    with caplog.at_level(logging.INFO):
        assert post().status_code == 422
        own_redis.kill()
        assert post().status_code == 422
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len([w for w in warned if w.startswith("refused event not counted")]) == 2, warned
    assert problems(caplog.records) == []


# Slow, vanishing and oversized clients --------------------------------------------------------

def read_answer(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection. A server that closes a
    socket with bytes of ours still unread (a body still dripping in) resets it: the kernel
    hands us what arrived before the reset, then the reset as an error, which ends it too."""
    received = b""
    try:
        while chunk := sock.recv(65536):
            received += chunk
    except ConnectionResetError:
        pass
    return received


def head(path: str, length: int, extra: str = "") -> bytes:
    return (f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {length}\r\n{extra}"
            "\r\n").encode()


def test_a_dripped_body_is_408_and_closed_not_accepted(web, caplog):
    body, headers = event_body()
    signed = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
    with caplog.at_level(logging.INFO), web.raw() as sock:
        sock.sendall(head("/v1/events", len(body), signed) + body[:10])
        stop = threading.Event()

        def drip() -> None:  # a byte every 0.2 s: the whole body would take minutes
            for byte in body[10:]:
                if stop.wait(0.2):
                    return
                try:
                    sock.send(bytes([byte]))
                except OSError:
                    return

        dripping = threading.Thread(target=drip)
        dripping.start()
        try:
            answer = read_answer(sock)
        finally:
            stop.set()
            dripping.join()
    assert answer.startswith(b"HTTP/1.1 408 "), answer
    assert web.client.keys("n:{*}:event:*") == []
    assert problems(caplog.records) == []


def test_many_connections_holding_half_sent_bodies_are_all_closed(web):
    """300 held connections all stayed open before (issue 13): each is closed by the
    deadline, and the service answers meanwhile and after."""
    held = [web.raw() for _ in range(100)]
    try:
        for sock in held:
            sock.sendall(head("/v1/events", 1000) + b"{")
        assert web.http.get("/healthz").status_code == 200
        assert all(read_answer(sock).startswith(b"HTTP/1.1 408 ") for sock in held)
    finally:
        for sock in held:
            sock.close()
    wait_for(lambda: len(web.server.server_state.connections) <= 1, what="all closed")
    assert web.http.get("/healthz").status_code == 200


def test_headers_never_finished_are_408_and_closed(web):
    with web.raw() as sock:
        sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
        assert read_answer(sock).startswith(b"HTTP/1.1 408 ")
    with web.raw() as sock:  # nothing sent at all
        assert read_answer(sock).startswith(b"HTTP/1.1 408 ")


@pytest.mark.parametrize("path", ["/v1/events", "/twilio/status", "/sendgrid/events"])
def test_a_client_hanging_up_mid_body_is_one_info_line(web, caplog, path):
    with caplog.at_level(logging.INFO):
        with web.raw() as sock:
            sock.sendall(head(path, 1000) + b"x" * 10)
        wait_for(lambda: any("went away" in r.getMessage() for r in caplog.records),
                 what="the disconnect's log line")
    assert [r.getMessage() for r in caplog.records if r.name.startswith("notifier")] == [
        f"POST {path}: the client went away before its request was read"]
    assert problems(caplog.records) == []


@pytest.mark.parametrize("path", ["/v1/events", "/twilio/status", "/twilio/inbound",
                                  "/sendgrid/events"])
def test_a_declared_10_mb_body_is_413_before_it_is_sent(web, path):
    with web.raw() as sock:
        sock.sendall(head(path, 10 * 1024 * 1024))  # and not a byte of the body
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 413 "), answer


@pytest.mark.parametrize(("path", "limit"), [
    ("/v1/events", 64 * 1024), ("/twilio/status", 64 * 1024),
    ("/twilio/inbound", 64 * 1024), ("/sendgrid/events", 1024 * 1024)])
def test_each_routes_body_limit_is_the_readmes(web, path, limit):
    """README: bodies within 64 KiB, 1 MiB for SendGrid's batches; one byte more is 413
    (a body at the limit is read, and refused for what it says, unsigned)."""
    assert web.http.post(path, content=b"x" * limit).status_code != 413
    assert web.http.post(path, content=b"x" * (limit + 1)).status_code == 413


@pytest.mark.parametrize("path", ["/twilio/status", "/sendgrid/events"])
def test_a_chunked_body_is_refused_once_past_the_limit(web, path):
    sent = 0

    def chunks() -> Iterator[bytes]:
        nonlocal sent
        for _ in range(20 * 1024):  # 20 MB, if it were all read
            sent += 1024
            yield b"x" * 1024

    answer = web.http.post(path, content=chunks())
    assert answer.status_code == 413
    # Refused long before the end: what was sent past the limit (1 MB at most) sits in
    # the sockets' buffers, a few MB on loopback.
    assert sent < 10 * 1024 * 1024, "the body was read to its end"


def test_over_the_connection_cap_requests_are_503(own_redis):
    served = Web(own_redis.url, settings(NOTIFIER_WEB_MAX_CONNECTIONS="3"))
    held = [served.raw() for _ in range(3)]
    try:
        for sock in held:
            sock.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never ended
        wait_for(lambda: len(served.server.server_state.connections) >= 3,
                 what="the held connections")
        full = served.http.get("/healthz")
        assert (full.status_code, full.headers["retry-after"]) == (503, "1")
        assert full.headers["connection"] == "close"
        for sock in held:
            sock.close()
        wait_for(lambda: served.http.get("/healthz").status_code == 200,
                 what="room again once they are gone")
    finally:
        served.close()


def test_the_bounds_are_settings_with_defaults():
    defaults = settings()
    assert (defaults.web_read_timeout_s, defaults.web_max_connections) == (10.0, 1000)
    config = server_config(None, "info", defaults)
    assert config.limit_concurrency == 1000
    with pytest.raises(ConfigError, match="NOTIFIER_WEB_READ_TIMEOUT_S: must be more than 0"):
        settings(NOTIFIER_WEB_READ_TIMEOUT_S="0")
    with pytest.raises(ConfigError, match="NOTIFIER_WEB_MAX_CONNECTIONS: must be at least 1"):
        settings(NOTIFIER_WEB_MAX_CONNECTIONS="0")
