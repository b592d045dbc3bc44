"""A `Batch` (notifier/ledger/batch.py): many commands in one round trip, each with its own
answer or its own error. Real Redis."""

from __future__ import annotations

import pytest
import redis
from redis.backoff import NoBackoff
from redis.retry import Retry

from notifier.errors import StoreError, StoreUnavailable
from notifier.ledger.batch import Batch
from notifier.ledger.client import ledger_client
from notifier.ledger.embedded_redis import free_port

ECHO = "return {KEYS[1], ARGV[1]}"


@pytest.fixture
def client(redis_client):
    return ledger_client(redis_client)


def test_each_command_gets_its_own_answer_or_its_own_error(client):
    client.set("k:str", "v")
    batch = Batch(client)
    script = client.register_script(ECHO)
    got = batch.call("get", "k:str", parse=bytes.decode)
    wrong = batch.call("smembers", "k:str", parse=set)  # WRONGTYPE: a string, not a set
    echoed = batch.script(script, ["k1"], ["a1"], parse=lambda r: [v.decode() for v in r])
    assert len(batch) == 3
    batch.run()
    assert len(batch) == 0
    assert got.get() == "v"
    with pytest.raises(StoreError, match="WRONGTYPE"):
        wrong.get()
    assert echoed.get() == ["k1", "a1"]


def test_a_script_redis_no_longer_has_is_loaded_and_run_once(client):
    script = client.register_script("return redis.call('INCR', KEYS[1])")
    client.script_load(script.script)
    client.script_flush()  # as after a Redis restart
    batch = Batch(client)
    replies = [batch.script(script, ["k:count"], [], parse=int) for _ in range(3)]
    batch.run()
    assert [r.get() for r in replies] == [1, 2, 3]
    assert int(client.get("k:count")) == 3


def test_a_reply_read_before_its_batch_ran_is_a_bug():
    batch = Batch(None)
    reply = batch.call("get", "k", parse=bytes.decode)
    with pytest.raises(RuntimeError):
        reply.get()


def test_a_failed_round_trip_fails_every_reply():
    gone = ledger_client(redis.Redis(port=free_port(), socket_connect_timeout=0.2,
                                     retry=Retry(NoBackoff(), 0)))
    batch = Batch(gone)
    replies = [batch.call("get", f"k{i}", parse=bytes.decode) for i in range(3)]
    batch.run()  # never raises
    for reply in replies:
        with pytest.raises(StoreUnavailable):
            reply.get()
