"""Short links to video visits: `{NOTIFIER_PUBLIC_URL}/j/<token>` redirects to the
appointment's join URL as it is when the link is clicked (the route is in `notifier.web.links`).

A Teams or Zoom link runs to 200+ characters and would push an SMS past its budget; the short
link is 16 characters after the base, and a room changed after the SMS went out still works.
One token per appointment, made on first need (`ShortLinks.token_for`) with `secrets`: 96
random bits, so tokens cannot be guessed or enumerated. Keys (under `n:`): `short:{token}` ->
appointment id, `short-for:{appointment id}` -> token; both expire 90 days after the last
message that used them.

Errors: on the ledger's client (`notifier.ledger.client`, as `Store` builds every part) each
Redis call raises `StoreUnavailable` when Redis cannot be reached or cannot take commands
now, and `StoreError` when it refuses one (a script error, `WRONGTYPE`); the docstrings
below name only the errors of their own.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import redis

from notifier.ledger.notifications import PREFIX

#: 12 random bytes, 16 URL-safe characters (see `sms_budget.SHORT_TOKEN_CHARS`).
TOKEN_BYTES = 12
TOKEN = re.compile(r"[A-Za-z0-9_-]{16}")
#: A link outlives the messages that carry it: long after any visit it could lead to.
KEEP_S = 90 * 24 * 3600


def token_key(token: str) -> str:
    """The key of a token's appointment id: `n:short:{token}`."""
    return f"{PREFIX}short:{token}"


def appointment_key(appointment_id: str) -> str:
    """The key of an appointment's token: `n:short-for:{appointment id}`."""
    return f"{PREFIX}short-for:{appointment_id}"


class ShortLinks:
    """The short-link tokens of appointments, both ways."""
    def __init__(self, client: redis.Redis) -> None:
        self.redis: Any = client

    def token_for(self, appointment_id: str) -> str:
        """The appointment's token, made the first time. Two workers racing both end up with
        the one that was stored first (SET NX, then read back). Returns the 16-character
        token; each call keeps both keys another 90 days."""
        key = appointment_key(appointment_id)
        self.redis.set(key, secrets.token_urlsafe(TOKEN_BYTES), nx=True, ex=KEEP_S)
        stored: bytes = self.redis.get(key)
        token = stored.decode()
        with self.redis.pipeline(transaction=False) as pipe:
            pipe.set(token_key(token), appointment_id, ex=KEEP_S)
            pipe.expire(key, KEEP_S)
            pipe.execute()
        return token

    def appointment_for(self, token: str) -> str | None:
        """The appointment id behind `token`; None for a malformed, unknown or expired token
        (a malformed one is not looked up)."""
        if not TOKEN.fullmatch(token):
            return None
        found = self.redis.get(token_key(token))
        return found.decode() if found else None
