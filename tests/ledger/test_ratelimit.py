"""The send rate shared through Redis: two worker processes pacing one sender."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import UTC, datetime

from notifier.ledger.ratelimit import RateLimiter

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)

#: One worker process's sends: reserve `count` slots of sender "sms:shared" at NOW, as the
#: deliverer does, on its own connection; print each slot's epoch seconds.
RESERVE = """
import sys
from datetime import UTC, datetime
from notifier.ledger.client import LedgerRedis
from notifier.ledger.ratelimit import RateLimiter
limiter = RateLimiter(LedgerRedis.from_url(sys.argv[1]), "sms:shared", per_s=10.0)
now = datetime.fromtimestamp(float(sys.argv[2]), UTC)
print("\\n".join(str(limiter.reserve(now).timestamp()) for _ in range(int(sys.argv[3]))))
"""


def test_two_worker_processes_share_one_rate_never_two_sends_in_one_slot(redis_url,
                                                                          redis_client):
    """Two processes reserve 200 slots each at once: together they get the 400 slots of
    one rate of 10 a second, each once (none shared, none skipped), not 10 a second each."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    workers = [subprocess.Popen([sys.executable, "-c", RESERVE, redis_url,
                                 str(NOW.timestamp()), "200"],
                                stdout=subprocess.PIPE, text=True, env=env)
               for _ in range(2)]
    slots = []
    for worker in workers:
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0
        slots += [round(float(line) - NOW.timestamp(), 6) for line in out.split()]
    assert sorted(slots) == [round(k * 0.1, 6) for k in range(400)]
    # The next reservation, from this process, takes the slot after all of theirs.
    after = RateLimiter(redis_client, "sms:shared", per_s=10.0).reserve(NOW)
    assert round(after.timestamp() - NOW.timestamp(), 6) == 40.0
