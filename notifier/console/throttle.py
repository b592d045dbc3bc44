"""Sign-in throttling: sign-ins counted per name tried and per client address, in Redis
(the `limits` package's fixed windows, keys `n:console:limits:*`, each expiring with its
window, each one key, so one slot on a Redis Cluster), so every web process shares the
count. Each attempt is counted before its
password is checked (one atomic INCR), so sign-ins sent at once cannot all slip under the
limit; a good sign-in then clears its name's count, so what the name limit bounds is
failures.

- `NAME_LIMIT`: 5 sign-ins for one name in 15 minutes without a good one (OWASP's
  Authentication Cheat Sheet, "Login Throttling"; NIST SP 800-63B 5.2.2 allows at most
  100 in a row), then that name is refused until the window ends, even with the right
  password. Anyone who knows a name can hold it off this way for 15 minutes at a time:
  the price of bounding guesses per account;
- `ADDRESS_LIMIT`: 30 sign-ins from one address in 15 minutes, good ones included
  (someone trying many names), then that address is refused likewise.

Names are kept in the keys as a digest: what is typed in the name field may be a
password typed in the wrong field.

A refused attempt never reaches the password check, whose argon2 hash costs 64 MiB and
tens of milliseconds: `VERIFY_SLOTS` such checks run at once per web process, so a flood
of sign-ins cannot take the memory either.
"""

from __future__ import annotations

import hashlib
import math
import time
from dataclasses import dataclass
from typing import Any

from limits import RateLimitItemPerMinute
from limits.storage import RedisClusterStorage, RedisStorage
from limits.strategies import FixedWindowRateLimiter
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry

from notifier.ledger.client import client_store_errors
from notifier.ledger.connect import cluster_masters, cluster_settings

#: Failed sign-ins allowed per operator name, per 15 minutes.
NAME_LIMIT = RateLimitItemPerMinute(5, 15)
#: Failed sign-ins allowed per client address, per 15 minutes.
ADDRESS_LIMIT = RateLimitItemPerMinute(30, 15)
#: The keys' prefix (a family of `notifier.ledger.keyspace`).
KEY_PREFIX = "n:console:limits"
#: Password checks (argon2id, 64 MiB each) running at once in one web process.
VERIFY_SLOTS = 2


@dataclass(frozen=True)
class Refusal:
    """Why a sign-in is refused before its password is checked, and for how long
    (whole seconds, at least 1)."""

    what: str
    retry_after_s: int


class SignInThrottle:
    """Failed sign-ins per name and per address, over redis-py client `redis`'s
    connection pool. Raises `StoreUnavailable` / `StoreError` as the ledger does
    (`notifier.ledger.client.store_errors`): the sign-in answers 503 then, as any page
    does without Redis."""

    def __init__(self, redis: Any) -> None:
        """`redis`: the ledger's client, of one Redis or of a cluster (a `RedisCluster`,
        whose nodes, credentials, TLS, timeouts and retries `limits`' own cluster client
        takes, reading the slot map now). Raises `StoreUnavailable` when no node of a
        cluster answers."""
        storage: RedisStorage
        if isinstance(redis, RedisCluster):
            # `limits` makes its own cluster client (it takes no client, only a URI and
            # its options): options replace what the URI would say. Each limit's window
            # is one key, so one slot.
            with client_store_errors():
                options: dict[str, Any] = {
                    "startup_nodes": [ClusterNode(host, port)  # type: ignore[no-untyped-call]
                                      for host, port in cluster_masters(redis)],
                    "retry": Retry(redis.retry._backoff, redis.retry.get_retries()),
                    **cluster_settings(redis)}
                storage = RedisClusterStorage("redis+cluster://", key_prefix=KEY_PREFIX,
                                              **options)
        else:
            storage = RedisStorage("redis://", connection_pool=redis.connection_pool,
                                   key_prefix=KEY_PREFIX)
        self._limiter = FixedWindowRateLimiter(storage)

    def attempt(self, name: str, address: str) -> Refusal | None:
        """Count a sign-in as `name` from `address`, and say why it is refused, or None
        when its password may be checked. (The windows run on the wall clock, as `limits`
        keeps them.)"""
        with client_store_errors():
            for limit, what, key in ((NAME_LIMIT, "this name", _name_key(name)),
                                     (ADDRESS_LIMIT, "this address", f"address:{address}")):
                if not self._limiter.hit(limit, key):
                    reset = self._limiter.get_window_stats(limit, key).reset_time
                    return Refusal(what, max(1, math.ceil(reset - time.time())))
        return None

    def succeeded(self, name: str) -> None:
        """A good sign-in: `name`'s attempts are forgotten (the address's are not)."""
        with client_store_errors():
            self._limiter.clear(NAME_LIMIT, _name_key(name))


def _name_key(name: str) -> str:
    """The limiter's key of a name tried: a digest, never the text typed."""
    return "name:" + hashlib.sha256(name.encode()).hexdigest()[:24]
