"""How durable Redis says its writes are: its append-only file and fsync policy, as
`CONFIG GET` reports them, for `/healthz` and the start-up log.

What each policy means for a write Redis has acknowledged (a 202, a `sent` record):

- `always`: fsynced before Redis answers; survives a killed redis-server and a power loss.
- `everysec`: survives a killed redis-server (the kernel holds it); up to about a second
  of writes can be lost on a power loss or kernel crash.
- `no`: survives a killed redis-server; the kernel writes it out when it chooses (tens of
  seconds on Linux), all of which a power loss can take.
- `off` (`appendonly no`): only what the last snapshot, if any, holds.

Only the configuration is read: a test can kill the process, not the machine, so no test
here proves what a power loss keeps (README, "Testing").
"""

from __future__ import annotations

import logging
from typing import Literal

import redis

from notifier.errors import StoreError, StoreUnavailable
from notifier.ledger.client import ledger_client

log = logging.getLogger(__name__)

Fsync = Literal["always", "everysec", "no", "off", "unknown"]
#: Policies under which an acknowledged write can be lost on a power loss.
AT_RISK: frozenset[str] = frozenset({"no", "off"})


def fsync_policy(client: redis.Redis) -> Fsync:
    """The server's fsync policy in one word (`off` without an append-only file, `unknown`
    when `CONFIG` is refused, as managed Redis services may). One round trip. Raises
    `StoreUnavailable` when Redis cannot be reached."""
    try:
        # One command for both settings (a pattern, so Redis 6 answers it too).
        reply = ledger_client(client).config_get("append*")
    except StoreUnavailable:
        raise
    except StoreError:
        return "unknown"
    config = {_text(k): _text(v) for k, v in reply.items()}
    if config.get("appendonly") == "no":
        return "off"
    policy = config.get("appendfsync", "")
    if config.get("appendonly") == "yes" and policy in ("always", "everysec", "no"):
        return policy  # type: ignore[return-value]
    return "unknown"


def log_fsync_policy(client: redis.Redis) -> Fsync:
    """Log the policy once (at start-up): a warning when a power loss can take acknowledged
    writes, else one INFO line. Returns it. Raises `StoreUnavailable` as `fsync_policy`."""
    policy = fsync_policy(client)
    if policy in AT_RISK:
        log.warning("redis fsync policy: %s; events answered 202 can be lost on a power loss "
                    "(run Redis with appendonly yes, appendfsync always)", policy)
    else:
        log.info("redis fsync policy: %s", policy)
    return policy


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)
