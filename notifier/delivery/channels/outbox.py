"""The outbox: the channel used without provider credentials, in place of Twilio and
SendGrid; the rest of the pipeline is the same.

One JSON line per sent message in `messages.jsonl` (an SMS's with its `encoding` and
`segments`), each attachment as a file beside it
named after the notification. Lines are written with a single `write` on a file opened
in append mode, so concurrent worker threads and processes never interleave a line.

Everything here holds contact details: the directory is the owner's only (0700), and so
is every file (0600). `messages.jsonl` is created empty when the outbox is set up, so
`tail` works before the first message (at night the first one waits for the morning).
"""

from __future__ import annotations

import json
import os
import re
from datetime import datetime
from pathlib import Path

from notifier.delivery.channels import Message, Receipt


def _safe_name(notification_id: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]", "_", notification_id)


def _private_file(path: Path, flags: int) -> int:
    """A file descriptor on `path`, created 0600; one made looser by an older version is
    tightened too (O_CREAT's mode applies only to a new file)."""
    fd = os.open(path, flags | os.O_CREAT, 0o600)
    os.fchmod(fd, 0o600)
    return fd


class Outbox:
    """The outbox under `directory`, created owner-only with an empty `messages.jsonl`."""
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.directory.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory.mkdir(exist_ok=True, mode=0o700)
        os.chmod(self.directory, 0o700)
        self.path = directory / "messages.jsonl"
        os.close(_private_file(self.path, os.O_WRONLY | os.O_APPEND))

    def send(self, message: Message, now: datetime) -> Receipt:
        """Append `message` as one JSON line (attachments written beside it); returns a
        `Receipt` whose provider id is `outbox:{notification id}`. Raises no `ChannelError`;
        an `OSError` when the directory cannot be written."""
        names = []
        for attachment in message.attachments:
            name = f"{_safe_name(message.notification_id)}.{attachment.filename}"
            fd = _private_file(self.directory / name, os.O_WRONLY | os.O_TRUNC)
            with os.fdopen(fd, "wb") as out:
                out.write(attachment.content)
            names.append(name)
        fields: dict[str, object] = {
            "id": message.notification_id,
            "kind": message.kind,
            "channel": message.channel,
            "to": message.to,
            "subject": message.subject,
            "body": message.body,
            "attachments": names,
            "due_at": message.due_at.isoformat(),
            "sent_at": now.isoformat(),
            "dedupe_key": message.notification_id,
        }
        if message.sms is not None:
            # What the SMS costs, as a carrier would bill it (`sms_text.measure`).
            fields.update(encoding=message.sms.encoding, segments=message.sms.segments)
        line = json.dumps(fields, ensure_ascii=False) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)
        return Receipt(provider_id=f"outbox:{message.notification_id}", sent_at=now)

    def already_sent(self, message: Message) -> bool | None:
        """The outbox can tell exactly: is there a line with this dedupe key?"""
        if not self.path.exists():
            return False
        needle = json.dumps(message.notification_id)
        with self.path.open(encoding="utf-8") as lines:
            return any(f'"dedupe_key": {needle}' in line for line in lines)

    def messages(self) -> list[dict[str, object]]:
        """Every line written so far (for `notifier dev` users and tests).

        A line still being written by another process has no newline yet: it is left for
        the next read rather than parsed half-way.
        """
        if not self.path.exists():
            return []
        complete = self.path.read_text(encoding="utf-8").split("\n")[:-1]
        return [json.loads(line) for line in complete if line.strip()]
