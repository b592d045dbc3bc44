"""`notifier preview KIND`: a template rendered with sample data, as it would be sent;
`notifier preview --all`: every kind, channel and locale with worst-case data, and what each
SMS costs."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from notifier.config import Settings
from notifier.delivery.channels import Message
from notifier.delivery.compose import (
    STAFF_KINDS,
    Stored,
    compose_client_message,
    compose_provider_digest,
    compose_support_message,
)
from notifier.delivery.render import Renderer
from notifier.delivery.sms_budget import (
    LOCALES,
    MAX_SEGMENTS,
    SHORT_TOKEN_CHARS,
    OverBudget,
    longest_zone,
    short_url,
    worst_case_sizes,
)
from notifier.delivery.sms_text import SmsSize
from notifier.errors import TemplateError
from notifier.ledger.records import (
    ClientRecord,
    OpenItem,
    PrescriptionRecord,
    ProviderQueueRecord,
    ProviderRecord,
)
from notifier.policy.figures import load_policy

SAMPLE_NOW = datetime(2026, 12, 1, 15, 0, tzinfo=UTC)


def sample_client(locale: str, first_name: str = "Ana") -> ClientRecord:
    """A sample client record (New York, SMS and email allowed) in `locale`."""
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
    """Sample params of a notification (an appointment 13 days after `SAMPLE_NOW`, a
    prescription, an open item), with `overrides` on top."""
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
    """A sample notification of `kind` on `channel`, addressed to the recipient the kind
    goes to, due at `SAMPLE_NOW`."""
    recipient = ("provider" if kind == "provider_digest"
                 else "support" if kind in STAFF_KINDS else "client")
    return Stored(id=f"{kind}:sample:preview:{channel}", kind=kind, channel=channel,
                  recipient=recipient, recipient_id="prov-1" if recipient == "provider"
                  else "client-1", due_at=SAMPLE_NOW, expires_at=SAMPLE_NOW + timedelta(days=9),
                  params=sample_params(**overrides), attempts=1)


#: Worst-case sample data for `preview --all`: the longest first name events allow, with
#: accents outside GSM-7, a typographic apostrophe and emoji; a real-length Teams link.
WORST_NAME = ("María-Josefína 🌻 O’Brien-Úrsula " * 4)[:100]
LONG_JOIN_URL = (
    "https://teams.microsoft.com/l/meetup-join/19%3ameeting_NzQ2ZTE5YjItZDU0Ni00OTljLWI5"
    "ZjMtNmQ3ZmM0MmE4YjYx%40thread.v2/0?context=%7b%22Tid%22%3a%2272f988bf-86f1-41af-91ab-"
    "2d7cd011db47%22%2c%22Oid%22%3a%2211e4c5f5-9a6b-4c3e-8d2a-3f1b7c9d0e42%22%7d")
#: A Wednesday in September: the longest day and month names in both locales.
WORST_START = datetime(2026, 9, 30, 22, 30, tzinfo=UTC)


def _message(settings: Settings, renderer: Renderer, kind: str, channel: str, locale: str,
             n: Stored, client: ClientRecord) -> Message:
    policy = load_policy(settings.schedules_dir)
    if kind == "provider_digest":
        return compose_provider_digest(n, SAMPLE_PROVIDER, SAMPLE_QUEUE, settings, policy,
                                       renderer, SAMPLE_NOW)
    if kind in STAFF_KINDS:
        return compose_support_message(n, SAMPLE_PROVIDER, settings, renderer, SAMPLE_NOW)
    return compose_client_message(
        n, client, SAMPLE_PROVIDER, settings, renderer, SAMPLE_NOW,
        prescription=SAMPLE_PRESCRIPTION,
        shorten=lambda: short_url(settings.public_url, "S" * SHORT_TOKEN_CHARS))


def _size(size: SmsSize | None) -> str:
    return f"{size.encoding:<6} {size.segments:>2} ({size.units})" if size else "-"


@dataclass(frozen=True)
class TemplatePreview:
    """One template (kind x channel x locale) rendered with sample data.

    `message` is None when the sample SMS is over the budget (it would not be sent as SMS:
    `size` is then what it measured); `size` is the sample SMS's encoding and segments
    (None for email); `worst` the client SMS's worst case over every name, date, zone and
    branch of the template (`sms_budget.worst_case_sizes`; None for email and staff SMS);
    `over_budget` whether the sample or the worst case is over `MAX_SEGMENTS`; `note` the
    email's subject, the SMS's budget fallback, or why it is not budgeted."""

    kind: str
    channel: str
    locale: str
    message: Message | None
    size: SmsSize | None
    worst: SmsSize | None
    over_budget: bool
    note: str

    @property
    def name(self) -> str:
        """`sms/appointment_reminder.en`."""
        return f"{self.channel}/{self.kind}.{self.locale}"


def template_keys(renderer: Renderer) -> list[tuple[str, str, str]]:
    """Every (channel, kind, locale) there is a template for: SMS first, then email; staff
    kinds in English only."""
    return [(channel, kind, locale) for channel in ("sms", "email")
            for kind in renderer.kinds(channel)
            for locale in (("en",) if kind in STAFF_KINDS else LOCALES)]


def preview_entries(settings: Settings, worst_case: bool = True) -> list[TemplatePreview]:
    """Every template (`template_keys`) rendered with sample data: worst-case data
    (`WORST_NAME`, `LONG_JOIN_URL`, the zone with the longest name, a late cancellation)
    when `worst_case`, else the plain sample `notifier preview KIND` shows; each with its
    SMS size and the client SMS's worst case. Raises `TemplateError` when a template is
    missing or fails to render, `ConfigError` when the policy file is bad."""
    renderer = Renderer(Path(settings.templates_dir))
    bounds = worst_case_sizes(settings, renderer, STAFF_KINDS)
    entries = []
    for channel, kind, locale in template_keys(renderer):
        if worst_case:
            record = sample_client(locale, first_name=WORST_NAME)
            record = record.model_copy(update={"client": record.client.model_copy(
                update={"timezone": longest_zone(locale)[0]})})
            n = sample_stored(kind, channel, start=WORST_START.isoformat(),
                              end=(WORST_START + timedelta(minutes=30)).isoformat(),
                              change_by=(WORST_START - timedelta(hours=24)).isoformat(),
                              join_url=LONG_JOIN_URL, late_fee=True)
        else:
            record, n = sample_client(locale), sample_stored(kind, channel)
        try:
            message = _message(settings, renderer, kind, channel, locale, n, record)
        except OverBudget as exc:
            entries.append(TemplatePreview(kind, channel, locale, None, exc.size, None, True,
                                           "OVER BUDGET: not sent as SMS"))
            continue
        bound = bounds.get(f"{kind}.{locale}") if channel == "sms" else None
        if channel == "email":
            note = f"subject: {message.subject}"
        elif kind in STAFF_KINDS:
            note = "staff SMS: ids only, not budgeted"
        else:
            note = message.fallback
        over = bound is not None and bound.segments > MAX_SEGMENTS
        if over:
            note = f"OVER BUDGET in the worst case; {note}"
        entries.append(TemplatePreview(kind, channel, locale, message, message.sms, bound,
                                       over, note))
    return entries


def preview_all(settings: Settings) -> tuple[str, int]:
    """`preview_entries` with worst-case data as a table: each template's sample SMS
    encoding and segments, its worst case, and a note. Returns the table as text and how
    many SMS templates are over the budget (a template over it in the worst case stops
    start-up). Raises as `preview_entries`."""
    rows = [f"{'template':<36} {'sample: encoding, segments (units)':<36} "
            f"{'worst case':<17} note"]
    over = 0
    for e in preview_entries(settings):
        over += e.over_budget
        if e.message is None:
            rows.append(f"{e.name:<36} {_size(e.size):<36} {'':<17} {e.note}")
        else:
            rows.append(f"{e.name:<36} {_size(e.size):<36} {_size(e.worst):<17} "
                        f"{e.note}".rstrip())
    rows.append(f"client SMS budget: {MAX_SEGMENTS} segments; "
                + (f"{over} over it" if over else "every client SMS within it"))
    return "\n".join(rows), over


def preview(settings: Settings, kind: str, locale: str, channel: str | None) -> str:
    """`kind` rendered with sample data in `locale`, on `channel` or on every channel it has
    a template for: each message as text under a header with its SMS size. Raises
    `TemplateError` for an unknown kind, a channel the kind is not sent by, or a template
    that fails to render; `ConfigError` when the policy file is bad."""
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
    out = []
    for ch in channels:
        n = sample_stored(kind, ch)
        message = _message(settings, renderer, kind, ch, locale, n, sample_client(locale))
        cost = f" {message.sms.describe()}" if message.sms else ""
        header = f"--- {ch} ({locale}){cost} ---"
        if ch == "email":
            files = ", ".join(a.filename for a in message.attachments) or "none"
            out.append(f"{header}\nSubject: {message.subject}\nAttachments: {files}\n\n"
                       f"{message.body}")
        else:
            out.append(f"{header}\n{message.body}")
    return "\n".join(out)
