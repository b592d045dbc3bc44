"""The one error hierarchy of Notifier.

    NotifierError
    ├── ConfigError            a setting or policy figure is missing or malformed
    ├── UsageError             a command was given something it cannot use (a file, a
    │                          name, a locale) or something it needs does not answer
    ├── EventError             an event cannot be accepted
    │   ├── SignatureError     missing, malformed or wrong signature, stale timestamp
    │   ├── PayloadTooLarge    body over the size limit
    │   └── InvalidEvent       not JSON, unknown type, or fields failing validation
    ├── TemplateError          a template is missing or fails to render
    ├── ChannelError           a channel (SMS, email, outbox) could not send
    │   ├── RetryableError     try again later (rate limit, 5xx, timeout)
    │   │   └── MaybeSent      the request may have reached the provider; no answer came
    │   └── PermanentError     never retry (invalid number, unsubscribed, bounced)
    └── StoreError             Redis data is not what we expect, or Redis refused a command
        ├── StoreUnavailable   Redis cannot be reached or cannot take commands now
        ├── StoreContention    a WATCHed write lost to concurrent writers too many times
        ├── TurnLost           a worker's turn on a subject ran out; another goes on
        └── CrossSlot          keys one command or script takes together are in several
                               Redis Cluster slots
"""

from __future__ import annotations

from dataclasses import dataclass


class NotifierError(Exception):
    """Root of every error Notifier raises on purpose."""


class ConfigError(NotifierError):
    """A setting or policy figure is missing or malformed; start-up stops."""


class UsageError(NotifierError):
    """A command cannot do what it was asked: a wrong argument or file, or a service it
    needs (Redis, the web server) does not answer. Its message says what to do."""


class EventError(NotifierError):
    """An event cannot be accepted."""


class SignatureError(EventError):
    """Missing, malformed or wrong webhook signature, or a stale timestamp."""


class PayloadTooLarge(EventError):
    """The request body is larger than the configured limit."""


@dataclass(frozen=True)
class FieldProblem:
    """One bad field of an event: a dotted location and what is wrong with it."""

    field: str
    message: str


class InvalidEvent(EventError):
    """Not JSON, an unknown type, or fields that fail validation."""

    def __init__(self, problems: list[FieldProblem]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p.field}: {p.message}" for p in problems))


class TemplateError(NotifierError):
    """A template is missing or fails to render."""


class ChannelError(NotifierError):
    """A channel could not send a message."""

    def __init__(self, message: str, code: str | None = None) -> None:
        self.code = code
        super().__init__(message)


class RetryableError(ChannelError):
    """The send may succeed later: rate limit, server error, timeout."""

    def __init__(self, message: str, code: str | None = None, retry_after_s: float | None = None):
        self.retry_after_s = retry_after_s
        super().__init__(message, code)


class MaybeSent(RetryableError):
    """The request may have reached the provider and its answer was lost (a read timeout, a
    connection dropped after the request was written): the provider may have taken the
    message. Its opposite, a failure before the request left (refused, DNS, a connect
    timeout), is a plain `RetryableError`. `report_wait_s`: how long the provider's first
    delivery report about it takes to arrive, seconds; None when none can (no callback or
    webhook configured)."""

    def __init__(self, message: str, code: str | None = None, retry_after_s: float | None = None,
                 report_wait_s: float | None = None):
        self.report_wait_s = report_wait_s
        super().__init__(message, code, retry_after_s)


class PermanentError(ChannelError):
    """The send will never succeed as it is: invalid number, unsubscribed, bounced."""


class StoreError(NotifierError):
    """Data in Redis is not what Notifier expects, or Redis refused a command."""


class StoreUnavailable(StoreError):
    """Redis cannot be reached or cannot take commands now (refused or lost connection,
    timeout, loading, read-only after a failover, out of memory). Nothing is known to have
    been written; retrying later is the remedy. Raised by the ledger's Redis client
    (`notifier.ledger.client`) in place of redis-py's errors."""


class StoreContention(StoreError):
    """An optimistic (WATCH) write kept losing to concurrent writers of the same keys and
    gave up; nothing was written. Retrying later is safe."""


class TurnLost(StoreError):
    """The caller's turn on a subject ran out and another worker took it: stop applying."""


class CrossSlot(StoreError):
    """Keys that one command or Lua script takes together hash to more than one Redis
    Cluster slot, which a cluster refuses (`CROSSSLOT`); the message names each key and its
    slot. Raised by `notifier.ledger.cluster.slots.assert_one_slot`."""
