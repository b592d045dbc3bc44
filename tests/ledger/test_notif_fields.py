"""The notification hash's layout: compact in Redis, read the same in either layout, and an
older version's hashes still delivered and reported."""

from __future__ import annotations

import json
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from icalendar import Calendar

from notifier.config import PROJECT_ROOT, Settings
from notifier.delivery.channels.outbox import Outbox
from notifier.delivery.compose import Stored
from notifier.delivery.deliverer import Deliverer
from notifier.delivery.render import Renderer
from notifier.ledger.notif_fields import logical, params_of, planned_fields, with_derived
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification
from tests.kit import appointment, client_upserted, provider_upserted, store_and_apply
from tests.ledger_keys import by_entity_key, notif_key, scheduled_ids

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 10:00 in New York
BOOKED = NOW - timedelta(minutes=1)
START = NOW + timedelta(days=10)
CONFIRM_EMAIL = "appointment_confirmation:a1:booked:email"
CONFIRM_SMS = "appointment_confirmation:a1:booked:sms"
REMINDER_SMS = f"appointment_reminder:a1:24h.{START:%Y%m%dT%H%M%SZ}:sms"
#: The encodings Redis gives a small hash: `ziplist` up to Redis 6, `listpack` from 7.
COMPACT = {b"ziplist", b"listpack"}
#: Long-ish but ordinary values: UUID ids, a meeting link with a passcode, a long kind.
APPT_ID = "3f2b1c9e-7d4a-4e8b-9c1d-2a6f5e8b7c3d"
JOIN_URL = "https://us02web.zoom.us/j/81234567890?pwd=QWxhZGRpbjpvcGVuIHNlc2FtZQ2Ft4dQ9mUx"
#: A Teams meeting link, 231 characters: the longest the product expects.
TEAMS_URL = ("https://teams.microsoft.com/l/meetup-join/19%3ameeting_"
             + "N2Q5ZjYxYjEtYzA4Ny00ZmM0LWI2ZGMtNDc3ZDk0MzRiOWE3" * 3
             + "%40thread.v2/0?context=%7b%22Tid%22%3a%2" + "2" * 11)[:231]


@pytest.fixture
def store(redis_client) -> Store:
    return Store(redis_client)


def realistic(state: str = "scheduled", reason: str = "") -> PlannedNotification:
    start = NOW + timedelta(days=3)
    return PlannedNotification(
        id=f"appointment_reminder:{APPT_ID}:72h.{start:%Y%m%dT%H%M%SZ}:sms",
        kind="appointment_reminder", channel="sms", recipient="client",
        recipient_id="client-7c1d2a6f-5e8b-4c3d-9f2b-1c9e7d4a4e8b",
        entity=f"appointment:{APPT_ID}", due_at=NOW, expires_at=start,
        params={"appointment_id": APPT_ID, "provider_id": "provider-0f8e7d6c5b4a39281706",
                "start": start.isoformat(), "end": (start + timedelta(minutes=50)).isoformat(),
                "change_by": (start - timedelta(hours=24)).isoformat(),
                "kind": "medication_management_follow_up", "join_url": JOIN_URL,
                "sequence": 12, "late_fee": True, "prescription_id": None},
        state=state,  # type: ignore[arg-type]
        reason=reason,
    )


def as_fields(flat: list) -> dict[str, str]:
    return {str(k): str(v) for k, v in zip(flat[::2], flat[1::2], strict=True)}


# The layout, pure --------------------------------------------------------------------------

@pytest.mark.parametrize("value", [
    "appt-1", "", "0123", "2026-12-09", "2026-12-09T18:00:00+00:00",
    "2026-12-09T18:00:00.250000+00:00", "2026-12-09T18:00:00Z", "2026-12-09T13:00:00-05:00",
    "2026-12-09T18:00:00", 0, 12, 1.5, True, False, ["a", 1], {"nested": {"x": None}},
    JOIN_URL, TEAMS_URL, "é" * 70, "x" * 64, "x" * 65, "x" * 63 + "é", ["y" * 40] * 5,
])
def test_every_param_reads_back_as_it_was_planned(value):
    n = realistic()
    planned = PlannedNotification(**{**n.__dict__, "params": {"x": value}})
    assert params_of(as_fields(planned_fields(planned, NOW))) == {"x": value}


def test_a_long_param_is_cut_into_pieces_of_at_most_64_bytes():
    fields = as_fields(planned_fields(realistic(), NOW))
    planned = PlannedNotification(**{**realistic().__dict__, "params": {"url": TEAMS_URL}})
    pieces = {k: v for k, v in as_fields(planned_fields(planned, NOW)).items()
              if k.startswith("s.url")}
    assert list(pieces) == ["s.url", "s.url#1", "s.url#2", "s.url#3"]
    assert "".join(pieces.values()) == TEAMS_URL
    assert all(len(v.encode()) <= 64 for v in fields.values())


def test_a_param_name_that_would_read_as_a_piece_is_refused():
    planned = PlannedNotification(**{**realistic().__dict__, "params": {"url#1": "x"}})
    with pytest.raises(ValueError, match="pieces"):
        planned_fields(planned, NOW)


def test_a_utc_time_param_is_kept_as_epoch_seconds_and_a_none_param_not_at_all():
    fields = as_fields(planned_fields(realistic(), NOW))
    assert fields["t.start"] == str(int((NOW + timedelta(days=3)).timestamp()))
    assert fields["s.appointment_id"] == APPT_ID and fields["p.sequence"] == "12"
    assert not any(name.endswith("prescription_id") for name in fields)
    assert params_of(fields) == {k: v for k, v in realistic().params.items() if v is not None}


def test_defaults_are_left_out_and_read_back():
    fields = as_fields(planned_fields(realistic(), NOW))
    assert "reason" not in fields and "attempts" not in fields and "params" not in fields
    shown = logical(realistic().id, fields)
    assert (shown["reason"], shown["attempts"]) == ("", "0")
    assert json.loads(shown["params"]) == params_of(fields)
    assert as_fields(planned_fields(realistic("expired", "too late"), NOW))["reason"] == \
        "too late"


def test_kind_and_channel_are_left_out_only_when_the_id_says_them():
    fields = as_fields(planned_fields(realistic(), NOW))
    assert "kind" not in fields and "channel" not in fields
    shown = logical(realistic().id, fields)
    assert (shown["kind"], shown["channel"]) == ("appointment_reminder", "sms")
    odd = PlannedNotification(**{**realistic().__dict__, "id": "legacy-id-7",
                                 "kind": "follow_up", "channel": "email"})
    kept = as_fields(planned_fields(odd, NOW))
    assert (kept["kind"], kept["channel"]) == ("follow_up", "email")
    other = PlannedNotification(**{**realistic().__dict__, "id": "appointment_reminder:a9:1:sms",
                                   "channel": "email"})
    assert "kind" not in (f := as_fields(planned_fields(other, NOW))) and f["channel"] == "email"
    assert Stored.from_fields(other.id, f).channel == "email"


def test_an_older_hash_reads_the_same():
    params = {"appointment_id": "a1", "start": "2026-12-05T15:00:00+00:00", "join_url": None}
    old = {"kind": "appointment_reminder", "channel": "sms", "to": "client", "to_id": "c1",
           "entity": "appointment:a1", "due": "1796396400.0", "expires": "1796482800.0",
           "state": "scheduled", "reason": "", "params": json.dumps(params, sort_keys=True),
           "attempts": "0", "created": "1796050800.123456"}
    assert params_of(old) == params
    assert logical("appointment_reminder:a1:24h:sms", old) == old
    stored = Stored.from_fields("appointment_reminder:a1:24h:sms", old)
    assert stored.params == params and stored.attempts == 0
    assert stored.due_at == datetime(2026, 12, 4, 15, 0, tzinfo=UTC)


# In Redis ----------------------------------------------------------------------------------

def test_a_realistic_notification_hash_stays_in_the_compact_encoding(store):
    n = realistic()
    store.write_plan(Plan(outcome="applied", add=(n,)), NOW)
    assert store.redis.object("encoding", notif_key(n.id)) in COMPACT
    assert json.loads(store.notification(n.id)["params"]) == {
        k: v for k, v in n.params.items() if v is not None}


@pytest.mark.parametrize("join_url", [None, JOIN_URL, TEAMS_URL])
def test_the_hashes_an_event_plans_stay_compact(store, policy, join_url):
    book(store, policy, join_url=join_url)
    ids = scheduled_ids(store.redis)
    assert len(ids) >= 5
    for i in ids:
        assert store.redis.object("encoding", notif_key(i)) in COMPACT, i
    assert store.redis.object("encoding", by_entity_key("appointment:a1")) in COMPACT


def entity_plan(*ids: str) -> Plan:
    return Plan(outcome="applied", add=tuple(
        PlannedNotification(**{**realistic().__dict__, "id": i, "entity": "appointment:a1"})
        for i in ids))


def test_an_entity_index_is_a_compact_sorted_set_until_redis_could_not_keep_it_so(store):
    index = by_entity_key("appointment:a1")
    short = [f"appointment_reminder:a1:{i}h:sms" for i in range(128)]
    store.write_plan(entity_plan(*short), NOW)
    assert store.redis.object("encoding", index) in COMPACT
    store.write_plan(entity_plan("appointment_reminder:a1:129th:sms"), NOW)
    assert store.redis.type(index) == b"set", "129 ids: a set is the smaller"
    assert len(store.about_entity("appointment:a1")) == 129

    store.redis.delete(index)
    long_id = f"appointment_reminder:a1:72h.{APPT_ID}:email"
    store.write_plan(entity_plan("appointment_reminder:a1:x:sms", long_id), NOW)
    assert store.redis.type(index) == b"set", "an id over 64 bytes: a set is the smaller"
    store.write_plan(Plan(outcome="applied", cancel=("appointment:a1",)), NOW)
    assert store.notification(long_id)["state"] == "cancelled"


# Hashes written by an older version --------------------------------------------------------

def book(store: Store, policy, join_url: str | None = None) -> None:
    store_and_apply(store, policy, client_upserted("c1", "America/New_York", BOOKED), BOOKED)
    store_and_apply(store, policy, provider_upserted("prov-1", BOOKED), BOOKED)
    store_and_apply(store, policy, appointment("appointment.scheduled", "a1", "c1", START,
                                               BOOKED, join_url=join_url), BOOKED)


def to_older_layout(store: Store, notification_id: str) -> dict[bytes, bytes]:
    """Rewrite a notification's hash as versions before the compact layout wrote it: all
    params as one JSON value; `kind`, `channel`, `reason` and `attempts` always; times as
    floats."""
    key = notif_key(notification_id)
    new = {k.decode(): v.decode() for k, v in store.redis.hgetall(key).items()}
    old = {k: v for k, v in with_derived(notification_id, new).items()
           if k[:2] not in ("s.", "t.", "p.")}
    old.update(params=json.dumps(params_of(new), sort_keys=True),
               reason=new.get("reason", ""), attempts=new.get("attempts", "0"))
    for name in ("due", "expires", "created"):
        old[name] = repr(float(new[name]) + (0.25 if name == "created" else 0.0))
    store.redis.delete(key)
    store.redis.hset(key, mapping=old)
    return store.redis.hgetall(key)


def test_an_older_hash_is_delivered_and_reported_as_before(store, policy, tmp_path: Path):
    book(store, policy)
    before = {i: store.notification(i) for i in (CONFIRM_EMAIL, CONFIRM_SMS, REMINDER_SMS)}
    for i in before:
        assert {b"params", b"kind", b"channel"} <= set(to_older_layout(store, i))
    entity = by_entity_key("appointment:a1")
    indexed = store.redis.zrange(entity, 0, -1)
    store.redis.delete(entity)
    store.redis.sadd(entity, *indexed)  # as older versions kept an entity's ids
    assert set(store.about_entity("appointment:a1")) == {i.decode() for i in indexed}
    assert {i: store.notification(i)["params"] for i in before} == {
        i: f["params"] for i, f in before.items()}

    outbox = Outbox(tmp_path / "outbox")
    deliverer = Deliverer(store=store, channels={"sms": outbox, "email": outbox},
                          renderer=Renderer(PROJECT_ROOT / "templates"),
                          settings=Settings.from_env({}, dotenv=Path("/nonexistent")),
                          policy=policy, rng=random.Random(7))
    assert deliverer.deliver(CONFIRM_EMAIL, NOW) == "sent"
    assert deliverer.deliver(CONFIRM_SMS, NOW) == "sent"
    email, sms = outbox.messages()
    assert (email["kind"], sms["kind"]) == ("appointment_confirmation",) * 2
    [ics_name] = email["attachments"]
    [vevent] = Calendar.from_ical((outbox.directory / ics_name).read_bytes()).walk("VEVENT")
    assert vevent.decoded("DTSTART") == START
    rows = {v.id: v for v in store.notifications_for("client", "c1")}
    assert rows[CONFIRM_SMS].state == "sent"
    assert NOW <= rows[CONFIRM_SMS].sent_at < NOW + timedelta(seconds=5)
    assert rows[REMINDER_SMS].state == "scheduled"
    assert rows[REMINDER_SMS].due_at == START - timedelta(hours=24)

    # An older hash, indexed in an older set, is cancelled by a reschedule, and its
    # replacement planned anew, indexed in the same set.
    store_and_apply(store, policy, appointment("appointment.rescheduled", "a1", "c1",
                                               START + timedelta(days=1), NOW), NOW)
    assert store.notification(REMINDER_SMS)["state"] == "cancelled"
    assert store.redis.type(entity) == b"set"
    now_indexed = set(store.redis.smembers(entity))
    assert set(indexed) < now_indexed
    assert {store.notification(i.decode())["state"] for i in now_indexed - set(indexed)} == {
        "scheduled"}
