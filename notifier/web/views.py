"""The read API's view models: what the HTTP layer shows of the ledger."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, ConfigDict


class NotificationView(BaseModel):
    """A notification as the read API shows it (built from a
    `notifier.ledger.reading.NotificationRow`)."""

    model_config = ConfigDict(from_attributes=True)

    id: str
    kind: str
    channel: str
    due_at: datetime
    expires_at: datetime
    state: str
    reason: str
    sent_at: datetime | None
    code: str | None
    delivery: str | None = None
    #: an SMS's encoding when it was rendered: GSM-7 or UCS-2
    sms_encoding: str | None = None
    #: the segments it takes, counted as carriers count them
    sms_segments: int | None = None
    #: the segments the provider says it sent (Twilio's num_segments)
    provider_segments: int | None = None
