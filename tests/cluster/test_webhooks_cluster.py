"""Delivery webhooks on the real 3-master cluster, through the ledger's cluster client
(`ledger_client(cluster_client)`, which raises `CrossSlot` before sending a script or a
transaction that mixes slots), and the same flow on one Redis: announcements in the
outboxes of their subjects' shards (one announced once), opt-outs in their fixed shard,
the fan-out of every shard to two endpoints, a message claimed and finished, one failed
and replayed, the endpoints' figures."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from pydantic import SecretStr

from notifier.ledger.announcements import queue_announcement
from notifier.ledger.batch import Batch
from notifier.ledger.shards import OPT_OUTS_SHARD
from notifier.ledger.store import Store
from notifier.webhooks.catalogue import Announcement, expand
from notifier.webhooks.endpoints import Endpoint
from notifier.webhooks.outbox import (
    WebhookOutbox,
    due_key,
    endpoint_key,
    inflight_key,
    log_key,
    message_key,
    pending_key,
)
from tests.ledger_keys import outbox_entries

NOW = datetime(2026, 11, 30, 15, 0, tzinfo=UTC)
#: Few shards, so that a handful of subjects covers each of them.
SHARDS = 3
PHONE = "+14155550123"


def endpoint(name: str, events: tuple[str, ...]) -> Endpoint:
    return Endpoint(name=name, url=f"http://127.0.0.1:9/{name}", events=expand(list(events)),
                    secret=SecretStr("whsec_" + "QUJD" * 8), max_in_flight=50)


@pytest.fixture(params=["cluster", "one redis"])
def store(request: pytest.FixtureRequest) -> Store:
    """A `Store` of `SHARDS` shards on the 3-master cluster, or on one Redis; the keys
    this module writes start empty (the cluster is the session's)."""
    client = request.getfixturevalue("cluster_client" if request.param == "cluster"
                                     else "redis_client")
    built = Store(client, shards=SHARDS)
    k = built.keys
    built.redis.delete(
        k.sms_opt_outs(), *(k.webhook_outbox(s) for s in k.all()),
        *(key(name) for name in ("ehr", "crm") for key in (
            due_key, inflight_key, pending_key, log_key, endpoint_key)))
    return built


def test_announcements_opt_outs_fan_out_and_dispatch_run_with_no_cross_slot(store):
    keys, ledger = store.keys, store.redis
    run = uuid.uuid4().hex[:8]
    subjects: dict[int, str] = {}
    for i in range(100):
        subjects.setdefault(keys.of_subject(f"a{run}{i}"), f"a{run}{i}")
        if len(subjects) == SHARDS:
            break
    # An appointment confirmed by a reply, in its MULTI; Twilio posts the reply again.
    for subject in subjects.values():
        for _ in range(2):
            with ledger.pipeline() as pipe:
                queue_announcement(pipe, keys, Announcement(
                    "appointment.confirmed", subject, {"appointment_id": subject},
                    once=f"SM{subject}"))
                pipe.execute()
    assert store.set_sms_opt_out(PHONE, True, "carrier", "21610")
    assert not store.set_sms_opt_out(PHONE, True)  # already: not announced again
    assert store.sms_opted_out(PHONE)
    batch = Batch(ledger)
    found = store.opt_outs.queue_opted_out(batch, [PHONE, "+14155550199"])
    batch.run()
    assert found.get() == {PHONE: True, "+14155550199": False}

    recorded = outbox_entries(ledger, keys)
    confirmed = [e for e in recorded if e.type == "appointment.confirmed"]
    assert sorted(e.subject for e in confirmed) == sorted(subjects.values())  # once each
    for e in confirmed:
        assert e.sequence % SHARDS == keys.of_subject(e.subject)
    (opted,) = [e for e in recorded if e.type == "client.opted_out"]
    assert opted.sequence % SHARDS == OPT_OUTS_SHARD
    assert len({e.sequence for e in recorded}) == len(recorded) == SHARDS + 1

    ehr, crm = endpoint("ehr", ("*",)), endpoint("crm", ("client.*",))
    outbox = WebhookOutbox(ledger, [ehr, crm], keys)
    assert outbox.fan_out(NOW) == SHARDS + 1
    assert outbox.waiting() == 0 and outbox.fan_out(NOW) == 0
    claimed = outbox.claim(ehr, NOW, lease_s=30, limit=10)
    assert sorted(json.loads(m.body)["data"]["sequence"] for m in claimed) == sorted(
        e.sequence for e in recorded)
    for m in claimed:
        assert outbox.finish(ehr, m.id, "delivered", NOW, status=200) == 1
    (to_crm,) = outbox.claim(crm, NOW, lease_s=30, limit=10)
    assert json.loads(to_crm.body)["type"] == "client.opted_out"
    assert outbox.finish(crm, to_crm.id, "failed", NOW, status=410) == 1
    assert outbox.replay(crm, NOW, NOW) == 1
    statuses: dict[str, Any] = {s.name: s for s in outbox.statuses(NOW)}
    assert (statuses["ehr"].delivered, statuses["ehr"].pending) == (SHARDS + 1, 0)
    assert (statuses["crm"].failed, statuses["crm"].pending) == (1, 1)
    assert ledger.hget(message_key("crm", to_crm.id), "state") == b"pending"
