"""`notifier preview KIND`: a template rendered with sample data, as it would be sent."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from notifier.compose import (
    STAFF_KINDS,
    Stored,
    compose_client_message,
    compose_provider_digest,
    compose_support_message,
)
from notifier.config import Settings
from notifier.errors import TemplateError
from notifier.policy.figures import load_policy
from notifier.records import (
    ClientRecord,
    OpenItem,
    PrescriptionRecord,
    ProviderQueueRecord,
    ProviderRecord,
)
from notifier.render import Renderer

SAMPLE_NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def sample_client(locale: str, first_name: str = "Ana") -> ClientRecord:
    return ClientRecord.model_validate({"updated_at": SAMPLE_NOW, "client": {
        "id": "client-1", "first_name": first_name, "phone": "+14155550123",
        "email": "ana@example.com", "timezone": "America/New_York", "locale": locale,
        "channels": {"sms": True, "email": True}}})


SAMPLE_PROVIDER = ProviderRecord.model_validate({"updated_at": SAMPLE_NOW, "provider": {
    "id": "prov-1", "name": "Dr. Rivera", "email": "rivera@example.com",
    "timezone": "America/Chicago"}})

SAMPLE_PRESCRIPTION = PrescriptionRecord.model_validate({"updated_at": SAMPLE_NOW,
    "prescription": {"id": "rx-1", "client_id": "client-1", "provider_id": "prov-1",
                     "medication": "Sertraline 50 mg", "filled_on": "2026-11-10",
                     "days_supply": 30, "refills_remaining": 2}})

SAMPLE_QUEUE = ProviderQueueRecord(updated_at=SAMPLE_NOW, items={
    "refill_request:req-1": OpenItem(kind="refill_request", client_id="client-1",
                                     opened_at=SAMPLE_NOW - timedelta(hours=52),
                                     escalates_at=SAMPLE_NOW - timedelta(hours=4)),
    "message:msg-7": OpenItem(kind="message", client_id="client-2",
                              opened_at=SAMPLE_NOW - timedelta(hours=20),
                              escalates_at=SAMPLE_NOW + timedelta(hours=28)),
})


def sample_params(**overrides: Any) -> dict[str, Any]:
    start = SAMPLE_NOW + timedelta(days=13, hours=0, minutes=30)
    params: dict[str, Any] = {
        "appointment_id": "appt-1", "provider_id": "prov-1", "start": start.isoformat(),
        "end": (start + timedelta(minutes=30)).isoformat(), "kind": "medication_management",
        "join_url": "https://video.example.com/rooms/0f8fad5b-d9cb-469f-a165-70867728950e",
        "sequence": 1, "change_by": (start - timedelta(hours=24)).isoformat(),
        "prescription_id": "rx-1", "runout": date(2026, 12, 10).isoformat(),
        "book_by": date(2026, 12, 8).isoformat(), "item_kind": "refill_request",
        "item_id": "req-1", "client_id": "client-1",
        "opened_at": (SAMPLE_NOW - timedelta(hours=48)).isoformat(),
    }
    return {**params, **overrides}


def sample_stored(kind: str, channel: str, **overrides: Any) -> Stored:
    recipient = ("provider" if kind == "provider_digest"
                 else "support" if kind in STAFF_KINDS else "client")
    return Stored(id=f"{kind}:sample:preview:{channel}", kind=kind, channel=channel,
                  recipient=recipient, recipient_id="prov-1" if recipient == "provider"
                  else "client-1", due_at=SAMPLE_NOW, expires_at=SAMPLE_NOW + timedelta(days=9),
                  params=sample_params(**overrides), attempts=1)


def preview(settings: Settings, kind: str, locale: str, channel: str | None) -> str:
    renderer = Renderer(Path(settings.templates_dir))
    channels = [channel] if channel else [c for c in ("sms", "email")
                                          if kind in renderer.kinds(c)]
    known = {c: renderer.kinds(c) for c in ("sms", "email")}
    if not any(kind in kinds for kinds in known.values()):
        every = sorted(set(known["sms"] + known["email"]))
        raise TemplateError(f"no template for kind {kind!r}; kinds: {', '.join(every)}")
    if channel is not None and kind not in known[channel]:
        other = "email" if channel == "sms" else "sms"
        raise TemplateError(f"{kind} is not sent by {channel}: pass --channel {other}, "
                            "or no --channel")
    policy = load_policy(settings.schedules_dir)
    out = []
    for ch in channels:
        n = sample_stored(kind, ch)
        if kind == "provider_digest":
            message = compose_provider_digest(n, SAMPLE_PROVIDER, SAMPLE_QUEUE, settings, policy,
                                              renderer, SAMPLE_NOW)
        elif kind in STAFF_KINDS:
            message = compose_support_message(n, SAMPLE_PROVIDER, settings, renderer, SAMPLE_NOW)
        else:
            message = compose_client_message(n, sample_client(locale), SAMPLE_PROVIDER, settings,
                                             renderer, SAMPLE_NOW,
                                             prescription=SAMPLE_PRESCRIPTION)
        header = f"--- {ch} ({locale}) ---"
        if ch == "email":
            files = ", ".join(a.filename for a in message.attachments) or "none"
            out.append(f"{header}\nSubject: {message.subject}\nAttachments: {files}\n\n"
                       f"{message.body}")
        else:
            out.append(f"{header}\n{message.body}")
    return "\n".join(out)
