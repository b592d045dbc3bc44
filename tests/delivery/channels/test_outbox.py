"""The outbox channel: one JSON line per message, attachments beside it, exact recovery."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from notifier.delivery.channels import Attachment, Message
from notifier.delivery.channels.outbox import Outbox
from notifier.delivery.sms_text import measure

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def message(notification_id: str = "appointment_confirmation:a1:booked:email") -> Message:
    return Message(notification_id=notification_id, kind="appointment_confirmation",
                   channel="email", to="ana@example.com", subject="Booked", body="Hi",
                   attachments=(Attachment("invite.ics", "text/calendar; method=REQUEST",
                                           b"BEGIN:VCALENDAR"),), due_at=NOW)


def test_a_sent_message_is_a_line_and_its_invite_a_file(tmp_path):
    outbox = Outbox(tmp_path)
    receipt = outbox.send(message(), NOW)
    [line] = (tmp_path / "messages.jsonl").read_text().splitlines()
    assert json.loads(line) == {
        "id": "appointment_confirmation:a1:booked:email", "kind": "appointment_confirmation",
        "channel": "email", "to": "ana@example.com", "subject": "Booked", "body": "Hi",
        "attachments": ["appointment_confirmation_a1_booked_email.invite.ics"],
        "due_at": NOW.isoformat(), "sent_at": NOW.isoformat(),
        "dedupe_key": "appointment_confirmation:a1:booked:email"}
    assert (tmp_path / "appointment_confirmation_a1_booked_email.invite.ics").read_bytes() == (
        b"BEGIN:VCALENDAR")
    assert receipt.provider_id == "outbox:appointment_confirmation:a1:booked:email"


def test_an_sms_line_says_its_encoding_and_segments(tmp_path):
    body = "Riverbend Health: Hi Ana, " + "x" * 200
    sms = Message(notification_id="refill_sent:r1:sms", kind="refill_sent", channel="sms",
                  to="+14155550123", body=body, due_at=NOW, sms=measure(body))
    Outbox(tmp_path).send(sms, NOW)
    [line] = Outbox(tmp_path).messages()
    assert (line["encoding"], line["segments"], line["body"]) == ("GSM-7", 2, body)


def test_already_sent_is_exact(tmp_path):
    outbox = Outbox(tmp_path)
    assert outbox.already_sent(message()) is False
    outbox.send(message(), NOW)
    assert outbox.already_sent(message()) is True
    assert outbox.already_sent(message("appointment_confirmation:a10:booked:email")) is False


def test_the_reader_leaves_a_line_still_being_written(tmp_path):
    outbox = Outbox(tmp_path)
    (tmp_path / "messages.jsonl").write_text('{"id": "a"}\n{"id": "b"}\n{"id": "appointment_c')
    assert outbox.messages() == [{"id": "a"}, {"id": "b"}]


def test_everything_in_the_outbox_is_the_owners_only(tmp_path):
    """Contact details and invites: directory 0700, every file 0600, whatever the umask."""
    import os

    directory = tmp_path / "outbox"
    old = os.umask(0o022)
    try:
        outbox = Outbox(directory)
        assert (directory / "messages.jsonl").read_text() == ""  # there before any message
        outbox.send(message(), NOW)
    finally:
        os.umask(old)
    assert directory.stat().st_mode & 0o777 == 0o700
    files = sorted(p.name for p in directory.iterdir())
    assert files == ["appointment_confirmation_a1_booked_email.invite.ics", "messages.jsonl"]
    for path in directory.iterdir():
        assert path.stat().st_mode & 0o777 == 0o600, path.name


def test_an_outbox_an_older_version_left_readable_is_tightened(tmp_path):
    import os

    directory = tmp_path / "outbox"
    directory.mkdir(mode=0o755)
    (directory / "messages.jsonl").write_text("")
    os.chmod(directory / "messages.jsonl", 0o644)
    os.chmod(directory, 0o755)
    Outbox(directory)
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "messages.jsonl").stat().st_mode & 0o777 == 0o600
