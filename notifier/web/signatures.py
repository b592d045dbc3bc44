"""Standard Webhooks signatures: signing and verifying `POST /v1/events`, pure (no I/O).

A signature is HMAC-SHA256 of `{webhook-id}.{webhook-timestamp}.{body}` with the key after
`whsec_`; the timestamp must be within 5 minutes of now, against replays.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import re
from collections.abc import Iterator
from datetime import datetime

from notifier.errors import SignatureError

SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")
#: Standard Webhooks' replay window: a timestamp further than this from now is refused.
TIMESTAMP_TOLERANCE_S = 5 * 60
#: Unix seconds, ASCII digits only: no sign, fraction, exponent, blanks or other scripts.
TIMESTAMP = re.compile(r"[0-9]{1,12}")


def webhook_signature(secret: str, webhook_id: str, timestamp: str, body: bytes) -> bytes:
    """HMAC-SHA256 of `{id}.{timestamp}.{body}` with the key after `whsec_`, over bytes
    (a body need not be UTF-8 to be signed)."""
    key = base64.b64decode(secret.removeprefix("whsec_"))
    return hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).digest()


def sign_webhook(secret: str, webhook_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value (`v1,<base64>`) that `verify_signature` accepts."""
    digest = webhook_signature(secret, webhook_id, str(timestamp), body)
    return "v1," + base64.b64encode(digest).decode()


def _signature_entries(header: str) -> Iterator[bytes]:
    """The well-formed `v1,<base64>` entries of a `webhook-signature`; others are skipped,
    so a malformed or future-version entry cannot hide a valid one during key rotation."""
    for entry in header.split():
        version, comma, encoded = entry.partition(",")
        if version != "v1" or not comma or not encoded:
            continue
        try:
            yield base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            continue


def verify_signature(secret: str, body: bytes, headers: dict[str, str], now: datetime) -> str:
    """Check a Standard Webhooks signature: any one of several space-separated entries may
    match, and the timestamp must be within 5 minutes of `now`.

    `headers` are keyed in lower case. Returns the `webhook-id`; raises `SignatureError`
    for anything missing, malformed, stale or wrong.
    """
    missing = [h for h in SIGNATURE_HEADERS if not headers.get(h)]
    if missing:
        raise SignatureError(f"missing header {', '.join(missing)}")
    webhook_id, timestamp = headers["webhook-id"], headers["webhook-timestamp"]
    if not TIMESTAMP.fullmatch(timestamp):
        raise SignatureError("webhook-timestamp is not Unix seconds (digits only)")
    skew_s = int(timestamp) - now.timestamp()
    if skew_s < -TIMESTAMP_TOLERANCE_S:
        raise SignatureError("webhook-timestamp more than 5 minutes old")
    if skew_s > TIMESTAMP_TOLERANCE_S:
        raise SignatureError("webhook-timestamp more than 5 minutes ahead")
    expected = webhook_signature(secret, webhook_id, timestamp, body)
    # Every entry is compared, so the time taken does not tell which one matched.
    matched = [hmac.compare_digest(expected, given)
               for given in _signature_entries(headers["webhook-signature"])]
    if not any(matched):
        raise SignatureError("no matching signature")
    return webhook_id
