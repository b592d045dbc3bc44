"""The workload the burst, steady and ingest benchmarks share: signed events, posted over
HTTP, and what the outbox shows afterwards.

Which events make a notification fall due at a chosen instant T: a client message
(`message.received`) that happened one response window (48 h by `policy.toml`) before T.
Its provider has not answered by T, so at T support gets an alert by email and by SMS
(`support_escalation`) and the client an SMS (`escalation_notice`): three notifications due
at T exactly, and nothing before (an appointment booking would also send its confirmation
at once). The clients live in a zone where T is midday, so quiet hours hold nothing.
"""

from __future__ import annotations

import asyncio
import base64
import json
import secrets
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from notifier.cli.send_event import sign_event

#: Notifications one `message.received` plans at its escalation: (kind, channel, recipient).
PER_MESSAGE = (("support_escalation", "email", "support"),
               ("support_escalation", "sms", "support"),
               ("escalation_notice", "sms", "client"))
CLIENTS = 50
PROVIDERS = 5
#: The response window of schedules/policy.toml (`response_window.window_h`, elapsed mode).
WINDOW = timedelta(hours=48)


def new_secret() -> str:
    return "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()


def midday_zone(at: datetime) -> str:
    """A fixed-offset IANA zone where `at` falls near midday (never in quiet hours)."""
    offset = at.astimezone(UTC).hour - 12
    # Etc/GMT+N is N hours *behind* UTC (POSIX sign).
    return "Etc/GMT" + (f"{offset:+d}" if offset else "")


def event(event_id: str, kind: str, occurred_at: datetime, data: dict[str, Any]) -> bytes:
    return json.dumps({"id": event_id, "type": kind, "occurred_at": occurred_at.isoformat(),
                       "data": data}).encode()


def people_events(now: datetime, zone: str, tag: str) -> list[bytes]:
    """`client.upserted` and `provider.upserted` for everyone the messages name."""
    before = now - timedelta(days=3)
    raws = [event(f"{tag}-client-{c}", "client.upserted", before, {"client": {
        "id": f"c{c:03d}", "first_name": "Ana", "phone": f"+1415555{c:04d}",
        "email": f"c{c:03d}@example.com", "timezone": zone,
        "channels": {"sms": True, "email": True}}}) for c in range(CLIENTS)]
    raws += [event(f"{tag}-provider-{p}", "provider.upserted", before, {"provider": {
        "id": f"prov-{p}", "name": f"Dr. {p}", "email": f"prov-{p}@example.com",
        "timezone": zone}}) for p in range(PROVIDERS)]
    return raws


def message_id(tag: str, i: int) -> str:
    return f"{tag}-m{i:07d}"


def message_events(dues: Sequence[datetime], tag: str) -> list[bytes]:
    """One `message.received` per due instant, each escalating exactly at it."""
    return [event(f"{tag}-evt-{i:07d}", "message.received", due - WINDOW, {"message": {
        "id": message_id(tag, i), "client_id": f"c{i % CLIENTS:03d}",
        "provider_id": f"prov-{i % PROVIDERS}"}}) for i, due in enumerate(dues)]


def expected_ids(count: int, tag: str) -> set[str]:
    """The notification ids `message_events` plans (the ledger's dedupe keys)."""
    return {f"{kind}:{message_id(tag, i)}:message-window:{channel}"
            for i in range(count) for kind, channel, _ in PER_MESSAGE}


@dataclass(frozen=True)
class PeerTask:
    """One notification as a peer's task gets it: what our ledger would hold."""

    id: str
    kind: str
    channel: str
    recipient: str
    due: float
    params: dict[str, Any]


def peer_tasks(dues: Sequence[datetime], tag: str) -> list[PeerTask]:
    """The same notifications as `message_events` plans, for the peers to schedule."""
    tasks = []
    for i, due in enumerate(dues):
        opened = due - WINDOW
        params = {"item_kind": "message", "item_id": message_id(tag, i),
                  "client_id": f"c{i % CLIENTS:03d}", "provider_id": f"prov-{i % PROVIDERS}",
                  "opened_at": opened.isoformat(), "escalates_at": due.isoformat()}
        for kind, channel, recipient in PER_MESSAGE:
            tasks.append(PeerTask(id=f"{kind}:{message_id(tag, i)}:message-window:{channel}",
                                  kind=kind, channel=channel, recipient=recipient,
                                  due=due.timestamp(), params=params))
    return tasks


# Posting ------------------------------------------------------------------------------------
def sign_all(secret: str, raws: Iterable[bytes]) -> list[bytes]:
    """Each event as a complete HTTP/1.1 request to POST /v1/events, signed now."""
    now = datetime.now(UTC)
    requests = []
    for body in raws:
        event_id = json.loads(body)["id"]
        headers = sign_event(secret, body, event_id, now)
        requests.append(b"POST /v1/events HTTP/1.1\r\nhost: 127.0.0.1\r\n" + b"".join(
            f"{k}: {v}\r\n".encode() for k, v in headers.items())
            + f"content-length: {len(body)}\r\n\r\n".encode() + body)
    return requests


async def _post(port: int, requests: Sequence[bytes], concurrency: int,
                until: float | None) -> tuple[float, list[float], int]:
    todo = iter(requests)
    latencies: list[float] = []
    refused = 0

    async def one_connection() -> None:
        nonlocal refused
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for request in todo:
                if until is not None and time.monotonic() >= until:
                    return
                started = time.perf_counter()
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                await reader.readexactly(length)
                latencies.append(time.perf_counter() - started)
                if not head.startswith(b"HTTP/1.1 202"):
                    refused += 1
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(one_connection() for _ in range(concurrency)))
    return time.perf_counter() - started, latencies, refused


def post(port: int, requests: Sequence[bytes], concurrency: int = 16,
         duration_s: float | None = None) -> tuple[float, list[float], int]:
    """Send the requests from `concurrency` keep-alive connections at once (plain asyncio
    streams with requests encoded beforehand, so the load generator costs little CPU
    beside the server), stopping after `duration_s` if given: (wall seconds, each
    request's latency in seconds, how many were not answered 202)."""
    until = None if duration_s is None else time.monotonic() + duration_s
    return asyncio.run(_post(port, requests, concurrency, until))


# The outbox ---------------------------------------------------------------------------------
class OutboxTail:
    """Counts the lines of an outbox's `messages.jsonl` as they come, reading only what
    was appended since the last look."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.lines = 0

    def count(self) -> int:
        try:
            with self.path.open("rb") as f:
                f.seek(self.offset)
                chunk = f.read()
        except FileNotFoundError:
            return self.lines
        end = chunk.rfind(b"\n") + 1
        self.lines += chunk.count(b"\n", 0, end)
        self.offset += end
        return self.lines


@dataclass(frozen=True)
class Sends:
    """What an outbox shows: lateness of each first send (sent_at - due_at, seconds,
    sorted), lost (expected, never sent), duplicates (lines beyond one per id)."""

    lateness: list[float]
    lost: int
    duplicates: int
    unexpected: int
    last_sent: float

    @property
    def sent(self) -> int:
        return len(self.lateness)


def read_sends(path: Path, expected: set[str]) -> Sends:
    seen: dict[str, float] = {}
    lines = duplicates = 0
    last = 0.0
    if path.exists():
        for line in path.read_text(encoding="utf-8").splitlines():
            if not line.strip():
                continue
            fields = json.loads(line)
            lines += 1
            sent = datetime.fromisoformat(fields["sent_at"]).timestamp()
            late = sent - datetime.fromisoformat(fields["due_at"]).timestamp()
            last = max(last, sent)
            if fields["id"] in seen:
                duplicates += 1
            else:
                seen[fields["id"]] = late
    ours = [late for key, late in seen.items() if key in expected]
    return Sends(lateness=sorted(ours), lost=len(expected - seen.keys()),
                 duplicates=duplicates, unexpected=len(seen.keys() - expected), last_sent=last)
