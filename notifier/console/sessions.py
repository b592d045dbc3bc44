"""Console sessions in signed cookies (itsdangerous), and CSRF tokens.

A session cookie holds `{"op": operator name, "csrf": token}`, signed and timestamped with
NOTIFIER_CONSOLE_SECRET. Every answer to a signed-in request sends it again with a fresh
timestamp, so a session unused for NOTIFIER_CONSOLE_SESSION_S is over (an idle timeout).
The CSRF token is bound to the session: every form carries it, every POST is checked
against it. Before sign-in, the login page sets a short-lived signed cookie holding a token
the login form carries back (double submit).

Cookies are `Secure` always, also in `notifier dev`: browsers treat http://localhost as a
secure context and keep such cookies there; a plain-HTTP host elsewhere cannot sign in.
A session also ends `MAX_SESSION` after its sign-in, however busy: a stolen cookie cannot
be kept alive for ever. It carries a digest of the operator's password hash as it was at
sign-in (`credential_key`): an operator taken out of the operators file, or whose password
is set again, has every session ended at their next request. Signing out clears the
browser's cookie and marks the session ended in Redis (`n:console:signed-out:{id}`, kept
`MAX_SESSION`), so a copy of the cookie is refused too.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from itsdangerous import BadSignature, TimestampSigner, URLSafeTimedSerializer

from notifier.timeutil import utcnow

#: The session cookie's name; `__Host-` makes browsers insist on Secure, path / and no domain.
SESSION_COOKIE = "__Host-notifier-console"
#: The pre-session CSRF cookie the login page sets.
LOGIN_CSRF_COOKIE = "__Host-notifier-console-login"
#: How long a login form stays usable (seconds).
LOGIN_FORM_S = 3600
#: However busy, a session ends this long after its sign-in: a working day.
MAX_SESSION = timedelta(hours=12)
#: Sessions signed out, by id (a key family of `notifier.ledger.keyspace`).
SIGNED_OUT_PREFIX = "n:console:signed-out:"
#: The form field carrying the CSRF token.
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True)
class Session:
    """A signed-in operator, the CSRF token their forms carry, when they signed in (whole
    seconds since the epoch), and `credential_key` of their password hash then."""

    operator: str
    csrf: str
    since: int
    key: str


def credential_key(password_hash: str) -> str:
    """A short digest of an operator's password hash: a session holds it, so a new
    password (a new hash, salted anew) ends the sessions opened with the old one. The hash
    itself never leaves the operators file."""
    return hashlib.sha256(password_hash.encode()).hexdigest()[:16]


def _signer_on(clock: Callable[[], datetime]) -> type[TimestampSigner]:
    """itsdangerous's timestamp signer, stamping with `clock` rather than `time.time()`."""

    class ClockSigner(TimestampSigner):
        def get_timestamp(self) -> int:
            return int(clock().timestamp())

    return ClockSigner


class SessionCodec:
    """Makes and reads the console's signed cookies with `secret`; a session older than
    `idle_s` seconds (since its cookie was last sent) is refused. Cookies are stamped with
    `clock` (timezone-aware), the one the caller checks them against."""

    def __init__(self, secret: str, idle_s: int,
                 clock: Callable[[], datetime] = utcnow) -> None:
        self.idle = timedelta(seconds=idle_s)
        signer = _signer_on(clock)
        self._sessions = URLSafeTimedSerializer(secret, salt="notifier.console.session",
                                                signer=signer)
        self._logins = URLSafeTimedSerializer(secret, salt="notifier.console.login-csrf",
                                              signer=signer)

    def new_session(self, operator: str, password_hash: str, now: datetime) -> Session:
        """A session for `operator` (whose password hash is `password_hash`) signing in at
        `now`, with a fresh CSRF token."""
        return Session(operator, secrets.token_urlsafe(32), int(now.timestamp()),
                       credential_key(password_hash))

    def dump(self, session: Session) -> str:
        """The cookie value of `session`, timestamped now."""
        return self._sessions.dumps({"op": session.operator, "csrf": session.csrf,
                                     "since": session.since, "key": session.key})

    def load(self, cookie: str | None, now: datetime) -> Session | None:
        """The session in `cookie`, or None when it is missing, forged, malformed, idle
        for longer than the timeout at `now` (timezone-aware), or older than
        `MAX_SESSION`."""
        if not cookie:
            return None
        try:
            data, signed_at = self._sessions.loads(cookie, return_timestamp=True)
        except BadSignature:
            return None
        if now - signed_at > self.idle:
            return None
        if not (isinstance(data, dict) and isinstance(data.get("op"), str)
                and isinstance(data.get("csrf"), str) and isinstance(data.get("since"), int)
                and isinstance(data.get("key"), str)):
            return None
        if now.timestamp() - data["since"] > MAX_SESSION.total_seconds():
            return None
        return Session(data["op"], data["csrf"], data["since"], data["key"])

    def login_token(self) -> tuple[str, str]:
        """A new pre-session CSRF token and the cookie value holding it."""
        token = secrets.token_urlsafe(32)
        return token, self._logins.dumps(token)

    def login_token_ok(self, cookie: str | None, submitted: str | None, now: datetime) -> bool:
        """Whether the login form's `submitted` token matches the one in its cookie, and
        the cookie is genuine and younger than `LOGIN_FORM_S`."""
        if not cookie or not submitted:
            return False
        try:
            token, signed_at = self._logins.loads(cookie, return_timestamp=True)
        except BadSignature:
            return False
        if now - signed_at > timedelta(seconds=LOGIN_FORM_S) or not isinstance(token, str):
            return False
        return hmac.compare_digest(token.encode(), submitted.encode())


def csrf_ok(session: Session, submitted: str | None) -> bool:
    """Whether a form's `submitted` token is `session`'s (compared in constant time)."""
    return submitted is not None and hmac.compare_digest(session.csrf.encode(),
                                                         submitted.encode())


def session_id(session: Session) -> str:
    """`session`'s id in Redis: a digest of its CSRF token (random, one per session), so
    Redis never holds the token itself."""
    return hashlib.sha256(session.csrf.encode()).hexdigest()[:32]


def end_session(redis: Any, session: Session) -> None:
    """Mark `session` signed out (through redis-py client `redis`) until it would have
    ended anyway."""
    redis.set(SIGNED_OUT_PREFIX + session_id(session), b"1",
              ex=int(MAX_SESSION.total_seconds()))


def session_ended(redis: Any, session: Session) -> bool:
    """Whether `session` was signed out."""
    return bool(redis.exists(SIGNED_OUT_PREFIX + session_id(session)))
