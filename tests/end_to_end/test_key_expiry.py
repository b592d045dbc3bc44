"""Every key has an expiry or a documented reason (issue 13, bounded data).

A realistic flow through the whole service (web, a real worker, the clock): events
applied, one held, bookings cancelled and completed, messages sent, SMS replies, a
provider digest, a delivery report about an unknown id, the clock's trimming. Then the
whole keyspace is SCANned: every key must belong to a family of
`notifier.ledger.keyspace.KEY_FAMILIES`, and a key without an expiry must be in a family
that says why it needs none (and, for notifications and events, be one still pending).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from notifier.delivery.render import Renderer
from notifier.intake.replies import reply_to_sms
from notifier.ledger.keyspace import BROKER_NAMESPACE, KEY_FAMILIES, family_of
from notifier.worker.actors import build_broker
from notifier.worker.digests import run_provider_digest
from tests.kit import (
    appointment,
    client_upserted,
    daytime_zone,
    event_dict,
    message_received,
    prescription_filled,
    provider_upserted,
    refill_requested,
)
from tests.service import Service, wait_for

pytestmark = pytest.mark.e2e

PHONE = "+14155550123"
#: Families that expire once what they hold has ended: pending, they have no expiry.
PENDING_FIRST = {"n:{*}:notif:*", "n:{*}:event:*"}


@pytest.fixture
def service(redis_client, redis_url, tmp_path):
    svc = Service(redis_url, tmp_path, env={"NOTIFIER_SUPPORT_PHONE": "+14155550100"})
    yield svc
    svc.close()


def realistic_flow(service: Service) -> None:
    now = datetime.now(UTC)
    zone = daytime_zone(now)
    today = now.astimezone(ZoneInfo(zone)).date()
    events = [
        client_upserted("c1", zone, now - timedelta(days=3), phone=PHONE),
        provider_upserted("prov-1", now - timedelta(days=3)),
        # Booked: a confirmation now, reminders later; one cancelled, one completed.
        appointment("appointment.scheduled", "a1", "c1", now + timedelta(days=5),
                    now - timedelta(minutes=5)),
        appointment("appointment.scheduled", "a2", "c1", now + timedelta(days=9),
                    now - timedelta(minutes=5)),
        event_dict("appointment.cancelled", {"appointment_id": "a2",
                                             "cancelled_by": "client"}, now),
        appointment("appointment.scheduled", "a0", "c1", now - timedelta(hours=2),
                    now - timedelta(days=2)),
        event_dict("appointment.completed", {"appointment_id": "a0"}, now),
        # Medication: a late fill (reminder at once), a request answered, a message open.
        prescription_filled("rx-1", "c1", today - timedelta(days=25), now),
        refill_requested("req-1", "rx-1", "c1", now - timedelta(minutes=1)),
        event_dict("refill.sent", {"request_id": "req-1"}, now),
        message_received("msg-1", "c1", now - timedelta(minutes=1)),
        # A close whose opening never came: held.
        event_dict("message.answered", {"message_id": "msg-never-seen"}, now),
    ]
    for evt in events:
        assert service.post(evt).status_code == 202, evt
    # An event refused at the door (422): counted for the console's Today page.
    refused = client_upserted("c-refused", "America/New_York", now)
    refused["data"]["client"]["timezone"] = "Mars/Olympus_Mons"
    assert service.post(refused).status_code == 422
    store = service.runtime.store
    wait_for(lambda: all(store.event_status(e["id"]).get("status") not in (None, "accepted")
                         for e in events), timeout_s=60, what="every event applied or held")
    assert store.event_status(events[-1]["id"])["status"] == "held"
    # Sent, then idle (idle alone may be a moment between a send's one-second waits).
    wait_for(lambda: {"appointment_confirmation", "refill_sent"}
             <= {m["kind"] for m in service.sent()}, timeout_s=60, what="the notices")
    wait_for(service.quiet, timeout_s=60, what="the service to go idle")
    # A digest for the provider, SMS replies, a report about an id we never sent.
    run_provider_digest(store, datetime.now(UTC), None, datetime.now(UTC))
    renderer = Renderer(Path(service.settings.templates_dir))
    for word in ("C", "START", "what?", "STOP"):
        reply_to_sms(store, service.settings, renderer, PHONE, word, f"SM-{word}",
                     datetime.now(UTC))
    store.record_delivery("never-sent:x:y:sms", "delivered", "", datetime.now(UTC))
    wait_for(lambda: service.sent("provider_digest"), what="the digest")
    wait_for(service.quiet, what="the service to go idle")
    store.trimmer.run(datetime.now(UTC))


def without_expiry(service: Service) -> dict[str, list[str]]:
    """Keys with no expiry, by family pattern; keys of no family under `None`."""
    found: dict[str, list[str]] = {}
    for raw in service.redis.scan_iter(count=1000):
        key = raw.decode()
        family = family_of(key)
        if family is None:
            found.setdefault("None", []).append(key)
        elif service.redis.ttl(key) == -1:
            found.setdefault(family.pattern, []).append(key)
    return found


def test_every_key_expires_or_is_in_a_family_that_says_why_not(service):
    realistic_flow(service)
    found = without_expiry(service)
    assert "None" not in found, f"keys no family names: {found.get('None')}"
    # A family that says how it expires has no key without an expiry, but for
    # notifications and events still pending, which expire once they end.
    promised = {f.pattern for f in KEY_FAMILIES if f.expires} - PENDING_FIRST
    assert {p: keys for p, keys in found.items() if p in promised} == {}
    redis = service.redis
    for key in found.get("n:{*}:notif:*", []):
        assert redis.hget(key, "state") in (b"scheduled", b"sending"), key
    for key in found.get("n:{*}:event:*", []):
        assert redis.hget(key, "status") in (b"accepted", b"held"), key
    # The flow went through most families (so this test sees what it claims to).
    seen = {family_of(k.decode()).pattern for k in redis.scan_iter(count=1000)}  # type: ignore[union-attr]
    assert {"n:{*}:notif:*", "n:{*}:by-recipient:*", "n:{*}:by-entity:*", "n:{*}:event:*",
            "n:{*}:rec:*", "n:{0}:sms-optout", "n:callbacks:unknown",
            "n:{*}:phone-clients:*", "n:{*}:held:*", "n:{*}:schedule", "n:{*}:clock",
            "n:clocks", "n:shards", "n:{*}:stats:*",
            "n:stats:refused:*",
            f"{BROKER_NAMESPACE}:__heartbeats__"} <= seen, seen


def test_every_family_says_how_it_expires_or_what_bounds_it():
    for family in KEY_FAMILIES:
        assert family.expires or family.bounded_by, family.pattern
    assert build_broker("redis://localhost:1").namespace == BROKER_NAMESPACE
