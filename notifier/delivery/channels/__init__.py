"""Channels behind one small interface: `send(message) -> Receipt`.

The rest of the code never imports a provider SDK; the choice of implementation is made
from settings once per process (`notifier.runtime.build_channels`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol, runtime_checkable

from notifier.delivery.sms_text import SmsSize


@dataclass(frozen=True)
class Attachment:
    filename: str
    content_type: str
    content: bytes


@dataclass(frozen=True)
class Message:
    """A rendered message, ready for a channel. `to` is a phone number or email address."""

    notification_id: str
    kind: str
    channel: str
    to: str
    body: str
    due_at: datetime
    subject: str | None = None
    html: str | None = None
    attachments: tuple[Attachment, ...] = field(default_factory=tuple)
    #: a time-bound message is worthless after this (carriers may be told so)
    expires_at: datetime | None = None
    #: an SMS's encoding and segment count, as measured when it was rendered
    sms: SmsSize | None = None
    #: the budget fallback used to fit it (`sms_budget`), or ""
    fallback: str = ""


@dataclass(frozen=True)
class Receipt:
    """What the channel said: its id for the message, for matching delivery callbacks."""

    provider_id: str
    sent_at: datetime
    #: how many segments the provider says it sent (Twilio's `num_segments`), if it says
    segments: int | None = None
    #: whether the provider reports delivery later (Twilio, SendGrid; the outbox does not):
    #: the send then awaits a final report, and is looked up if none comes
    awaits_report: bool = False


@dataclass(frozen=True)
class LookedUp:
    """What a provider says of a message it accepted: its status in the provider's words
    (Twilio's `delivered`, `undelivered`, `sent`...) and its error code, or ""."""

    status: str
    code: str = ""
    #: the address it went to (Twilio's `to`), or ""
    to: str = ""


class Channel(Protocol):
    """What the deliverer sends through: `send`, and `already_sent` after a crash."""
    def send(self, message: Message, now: datetime) -> Receipt:
        """Send `message`; returns the provider's `Receipt` (`sent_at` is `now`). Raises
        `RetryableError` (may succeed later, perhaps with `retry_after_s`) or
        `PermanentError` (never will), both with the provider's `code`."""
        ...

    def already_sent(self, message: Message) -> bool | None:
        """After a crash inside `send`: did it go out? None when the channel cannot tell."""
        ...


@runtime_checkable
class ReportLookup(Protocol):
    """A channel whose provider can be asked about a message it accepted (Twilio)."""
    def look_up(self, provider_id: str, now: datetime) -> LookedUp:
        """The message's status now, by the id its `Receipt` gave. Raises `RetryableError`
        (may answer later) or `PermanentError` (never will: an id the provider does not
        know), both with the provider's `code`."""
        ...
