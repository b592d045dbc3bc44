"""Whether a channel can reach a client now (`delivery.fallback.closed_reason`), as a table."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from notifier.delivery.fallback import closed_reason, needs_opt_out, other_channel
from notifier.intake.events import Client
from notifier.ledger.records import ClientRecord

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def client(*, sms: bool = True, email: bool = True, phone: str | None = "+14155550123",
           address: str | None = "c1@example.com") -> ClientRecord:
    return ClientRecord(updated_at=NOW, client=Client.model_validate({
        "id": "c1", "first_name": "Ana", "timezone": "UTC", "phone": phone, "email": address,
        "channels": {"sms": sms, "email": email}}))


@pytest.mark.parametrize(("channel", "record", "opted_out", "reason"), [
    ("sms", client(), False, ""),
    ("sms", client(), True, "client replied STOP"),
    ("sms", client(sms=False), True, "client does not accept sms"),
    ("sms", client(phone=None), True, "no phone number"),
    ("email", client(), True, ""),
    ("email", client(email=False), False, "client does not accept email"),
    ("email", client(address=None), False, "no email address"),
])
def test_closed_reason(channel, record, opted_out, reason):
    assert closed_reason(channel, record, opted_out) == reason


@pytest.mark.parametrize(("channel", "record", "needed"), [
    ("sms", client(), True),
    ("sms", client(sms=False), False),
    ("sms", client(phone=None), False),
    ("email", client(), False),
])
def test_the_opt_out_list_is_read_only_when_it_matters(channel, record, needed):
    assert needs_opt_out(channel, record) is needed


def test_the_other_channel():
    assert (other_channel("sms"), other_channel("email")) == ("email", "sms")
