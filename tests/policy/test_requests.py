"""Items waiting for a provider (notifier/policy/requests.py) and the response window
(notifier/policy/window.py): escalation to support, the client's notice, closing.

Pure: events are parsed from JSON as the web does, state is loaded from records the way the
store loads it (`refs_for`, then `derived_refs`), and `now` is passed in.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.intake.events import Event
from notifier.ledger.records import (
    ClientRecord,
    OpenItem,
    OpenItemRecord,
    PrescriptionRecord,
    ProviderQueueRecord,
    ProviderRecord,
    RefillAskedRecord,
)
from notifier.policy.figures import Policy, ResponseWindow
from notifier.policy.plan import Plan, PlannedNotification
from notifier.policy.window import escalates_at
from tests import kit
from tests.kit import parsed_event, utc

CLIENT = "cl-1"
PROVIDER = "prov-1"
RX = "rx-1"
REQUEST = "rq-1"
MESSAGE = "msg-1"
REQ_REF = f"refill_request:{REQUEST}"
MSG_REF = f"message:{MESSAGE}"
QUEUE_REF = f"provider_queue:{PROVIDER}"
SET_UP_AT = datetime(2026, 1, 2, 12, 0, tzinfo=UTC)
NEW_YORK = ZoneInfo("America/New_York")



def requested(occurred_at: datetime, request_id: str = REQUEST) -> Event:
    return parsed_event("refill.requested", {"request": {
        "id": request_id, "prescription_id": RX, "client_id": CLIENT,
        "provider_id": PROVIDER}}, occurred_at)


def received(occurred_at: datetime) -> Event:
    return parsed_event("message.received", {"message": {
        "id": MESSAGE, "client_id": CLIENT, "provider_id": PROVIDER}}, occurred_at)


def sent(occurred_at: datetime) -> Event:
    return parsed_event("refill.sent", {"request_id": REQUEST}, occurred_at)


def denied(occurred_at: datetime, reason: str = "other") -> Event:
    return parsed_event("refill.denied", {"request_id": REQUEST, "reason": reason}, occurred_at)


def answered(occurred_at: datetime) -> Event:
    return parsed_event("message.answered", {"message_id": MESSAGE}, occurred_at)


def client_record(zone: str) -> ClientRecord:
    return kit.client_record(CLIENT, zone, SET_UP_AT)


def provider_record(zone: str) -> ProviderRecord:
    upserted = parsed_event("provider.upserted", {"provider": {
        "id": PROVIDER, "name": "Dr. Rivera", "email": "rivera@example.com",
        "timezone": zone}}, SET_UP_AT)
    return ProviderRecord(provider=upserted.data.provider, updated_at=SET_UP_AT)


def prescription_record(filled_on: date, days: int = 30) -> PrescriptionRecord:
    fill = parsed_event("prescription.filled", {"prescription": {
        "id": RX, "client_id": CLIENT, "provider_id": PROVIDER, "medication": "Sertraline",
        "filled_on": filled_on.isoformat(), "days_supply": days, "refills_remaining": 2}},
        SET_UP_AT)
    return PrescriptionRecord(prescription=fill.data.prescription, updated_at=SET_UP_AT)


class Ledger(kit.Ledger):
    """The records this module's cases start from."""

    def __init__(self, client_zone: str | None = "America/New_York",
                 provider_zone: str | None = "America/New_York",
                 filled_on: date | None = date(2026, 6, 10)) -> None:
        super().__init__()
        if client_zone is not None:
            self.records[f"client:{CLIENT}"] = client_record(client_zone)
        if provider_zone is not None:
            self.records[f"provider:{PROVIDER}"] = provider_record(provider_zone)
        if filled_on is not None:
            self.records[f"prescription:{RX}"] = prescription_record(filled_on)


def business_days(policy: Policy) -> Policy:
    window = dataclasses.replace(policy.response_window, mode="business_days")
    return dataclasses.replace(policy, response_window=window)


Row = tuple[str, str, str, datetime, datetime, str]


def rows(result: Plan) -> dict[str, Row]:
    """id -> (recipient, recipient_id, entity, due_at, expires_at, state)."""
    assert len({n.id for n in result.add}) == len(result.add), "duplicate ids in one plan"
    return {n.id: (n.recipient, n.recipient_id, n.entity, n.due_at, n.expires_at, n.state)
            for n in result.add}


def escalation(item_id: str, ref: str, deadline: datetime, notice_due: datetime | None = None
               ) -> dict[str, Row]:
    """Support's email and SMS at the deadline, and the client's SMS notice with it."""
    window = f"{ref.split(':')[0]}-window"
    return {
        f"support_escalation:{item_id}:{window}:email": (
            "support", "support", ref, deadline, deadline + timedelta(days=7), "scheduled"),
        f"support_escalation:{item_id}:{window}:sms": (
            "support", "support", ref, deadline, deadline + timedelta(days=7), "scheduled"),
        f"escalation_notice:{item_id}:{window}:sms": (
            "client", CLIENT, ref, notice_due or deadline, deadline + timedelta(days=2),
            "scheduled"),
    }


# --- opening an item ----------------------------------------------------------------------

#: Thursday 2026-07-02 10:00 EDT; 2026-07-03 is the observed Independence Day holiday.
THURSDAY = utc(2026, 7, 2, 14, 0)
SATURDAY = utc(2026, 7, 4, 14, 0)
TUESDAY = utc(2026, 7, 7, 14, 0)


def test_a_refill_request_opens_an_item_with_its_escalation(policy: Policy) -> None:
    result = Ledger().plan(requested(THURSDAY), THURSDAY, policy)
    assert (result.outcome, result.reason) == ("applied", "")
    assert rows(result) == escalation(REQUEST, REQ_REF, SATURDAY)
    params = {"item_kind": "refill_request", "item_id": REQUEST, "client_id": CLIENT,
              "provider_id": PROVIDER, "opened_at": "2026-07-02T14:00:00+00:00",
              "escalates_at": "2026-07-04T14:00:00+00:00"}
    by_id = {n.id: n for n in result.add}
    assert by_id[f"support_escalation:{REQUEST}:refill_request-window:email"].params == params
    assert by_id[f"support_escalation:{REQUEST}:refill_request-window:sms"].params == params
    assert by_id[f"escalation_notice:{REQUEST}:refill_request-window:sms"].params == {
        **params}
    # The client asked: the refill reminders for the prescription stop.
    assert result.cancel == (f"prescription:{RX}",)
    assert result.records == {
        REQ_REF: OpenItemRecord(id=REQUEST, kind="refill_request", client_id=CLIENT,
                                provider_id=PROVIDER, prescription_id=RX, opened_at=THURSDAY,
                                updated_at=THURSDAY),
        QUEUE_REF: ProviderQueueRecord(updated_at=THURSDAY, items={REQ_REF: OpenItem(
            kind="refill_request", client_id=CLIENT, opened_at=THURSDAY,
            escalates_at=SATURDAY)}),
        # Beside the prescription: a fill that occurred before, applied after, plans none.
        f"refill_asked:{RX}": RefillAskedRecord(updated_at=THURSDAY),
    }


def test_a_message_opens_an_item_and_cancels_no_reminders(policy: Policy) -> None:
    result = Ledger().plan(received(THURSDAY), THURSDAY, policy)
    assert result.outcome == "applied"
    assert rows(result) == escalation(MESSAGE, MSG_REF, SATURDAY)
    assert result.cancel == ()
    assert {n.params["item_kind"] for n in result.add} == {"message"}
    assert result.records[MSG_REF] == OpenItemRecord(
        id=MESSAGE, kind="message", client_id=CLIENT, provider_id=PROVIDER, opened_at=THURSDAY,
        updated_at=THURSDAY)
    queue = result.records[QUEUE_REF]
    assert isinstance(queue, ProviderQueueRecord)
    assert list(queue.items) == [MSG_REF]


def test_the_queue_keeps_the_items_already_in_it(policy: Policy) -> None:
    ledger = Ledger()
    ledger.apply(received(THURSDAY), THURSDAY, policy)
    later = THURSDAY + timedelta(hours=3)
    result = ledger.apply(requested(later), later, policy)
    queue = result.records[QUEUE_REF]
    assert isinstance(queue, ProviderQueueRecord)
    assert queue.updated_at == later
    assert {ref: (item.kind, item.opened_at, item.escalates_at)
            for ref, item in queue.items.items()} == {
        MSG_REF: ("message", THURSDAY, SATURDAY),
        REQ_REF: ("refill_request", later, SATURDAY + timedelta(hours=3)),
    }


def test_the_client_notice_waits_for_the_morning_support_does_not(policy: Policy) -> None:
    # Opened 22:00 EDT Wednesday: the deadline is 22:00 EDT Friday.
    opened = utc(2026, 7, 2, 2, 0)
    deadline = utc(2026, 7, 4, 2, 0)
    result = Ledger().plan(requested(opened), opened, policy)
    assert rows(result) == escalation(REQUEST, REQ_REF, deadline,
                                      notice_due=utc(2026, 7, 4, 12, 0))


def test_the_client_notice_is_held_in_the_client_zone(policy: Policy) -> None:
    # 16:00 EDT for a New York provider is 05:00 in Kolkata: held to 08:00 IST (02:30Z).
    opened = utc(2026, 7, 2, 20, 0)
    deadline = utc(2026, 7, 4, 20, 0)
    result = Ledger(client_zone="Asia/Kolkata").plan(requested(opened), opened, policy)
    assert rows(result) == escalation(REQUEST, REQ_REF, deadline,
                                      notice_due=utc(2026, 7, 5, 2, 30))


@pytest.mark.parametrize(("mode", "expected"), [("elapsed", SATURDAY),
                                                ("business_days", TUESDAY)])
def test_the_issue_table_thursday_before_the_july_holiday(policy: Policy, mode: str,
                                                          expected: datetime) -> None:
    custom = policy if mode == "elapsed" else business_days(policy)
    assert custom.response_window.mode == mode
    result = Ledger().plan(requested(THURSDAY), THURSDAY, custom)
    assert rows(result) == escalation(REQUEST, REQ_REF, expected)
    assert expected.astimezone(NEW_YORK).strftime("%a %H:%M") == (
        "Sat 10:00" if mode == "elapsed" else "Tue 10:00")


def test_business_days_are_counted_in_the_provider_zone(policy: Policy) -> None:
    # 22:00 PDT Thursday is 01:00 EDT Friday (the holiday) for the New York client.
    opened = utc(2026, 7, 3, 5, 0)
    result = Ledger(provider_zone="America/Los_Angeles").plan(
        requested(opened), opened, business_days(policy))
    deadline = utc(2026, 7, 8, 5, 0)   # Tuesday 07-07 22:00 PDT
    assert rows(result) == escalation(REQUEST, REQ_REF, deadline,
                                      notice_due=utc(2026, 7, 8, 12, 0))


def test_without_a_known_provider_the_client_zone_counts(policy: Policy) -> None:
    opened = utc(2026, 7, 3, 5, 0)
    result = Ledger(client_zone="America/Los_Angeles", provider_zone=None).plan(
        requested(opened), opened, business_days(policy))
    deadline = utc(2026, 7, 8, 5, 0)
    assert rows(result) == escalation(REQUEST, REQ_REF, deadline,
                                      notice_due=utc(2026, 7, 8, 15, 0))


def test_a_duplicate_open_is_ignored(policy: Policy) -> None:
    ledger = Ledger()
    ledger.apply(requested(THURSDAY), THURSDAY, policy)
    for at in (THURSDAY, THURSDAY + timedelta(hours=1)):
        result = ledger.plan(requested(at), at, policy)
        assert (result.outcome, result.reason, result.add, result.cancel, result.records) == (
            "ignored", "already open", (), (), {})


# --- the response window ------------------------------------------------------------------

ELAPSED = ResponseWindow(mode="elapsed", window=timedelta(hours=48), business_days=2,
                         holiday_country="US")
BUSINESS = dataclasses.replace(ELAPSED, mode="business_days")

WINDOW_CASES = {
    "Thursday before the July 4th holiday, elapsed": (
        "America/New_York", THURSDAY, ELAPSED, SATURDAY),
    "Thursday before the July 4th holiday, business days skip Friday 07-03": (
        "America/New_York", THURSDAY, BUSINESS, TUESDAY),
    "Monday, business days: Wednesday": (
        "America/New_York", utc(2026, 6, 8, 14, 0), BUSINESS, utc(2026, 6, 10, 14, 0)),
    "Friday 10:00, elapsed: Sunday 10:00": (
        "America/New_York", utc(2026, 6, 5, 14, 0), ELAPSED, utc(2026, 6, 7, 14, 0)),
    "Friday 10:00, business days: Tuesday 10:00": (
        "America/New_York", utc(2026, 6, 5, 14, 0), BUSINESS, utc(2026, 6, 9, 14, 0)),
    "Saturday 15:00, elapsed: Monday 15:00": (
        "America/New_York", utc(2026, 6, 6, 19, 0), ELAPSED, utc(2026, 6, 8, 19, 0)),
    "Saturday 15:00, business days: Tuesday 15:00": (
        "America/New_York", utc(2026, 6, 6, 19, 0), BUSINESS, utc(2026, 6, 9, 19, 0)),
    "Sunday 23:30 EDT (Monday in UTC), business days: Tuesday 23:30 EDT": (
        "America/New_York", utc(2026, 6, 8, 3, 30), BUSINESS, utc(2026, 6, 10, 3, 30)),
    "Friday before spring-forward, elapsed: 48 h, 11:00 EDT Sunday": (
        "America/New_York", utc(2026, 3, 6, 15, 0), ELAPSED, utc(2026, 3, 8, 15, 0)),
    "Friday before spring-forward, business days: Tuesday 10:00 EDT": (
        "America/New_York", utc(2026, 3, 6, 15, 0), BUSINESS, utc(2026, 3, 10, 14, 0)),
    "Friday before fall-back, elapsed: 48 h, 09:00 EST Sunday": (
        "America/New_York", utc(2026, 10, 30, 14, 0), ELAPSED, utc(2026, 11, 1, 14, 0)),
    "Friday before fall-back, business days: Tuesday 10:00 EST": (
        "America/New_York", utc(2026, 10, 30, 14, 0), BUSINESS, utc(2026, 11, 3, 15, 0)),
    "Wednesday before Thanksgiving, business days: Friday, then Monday": (
        "America/New_York", utc(2026, 11, 25, 14, 0), BUSINESS, utc(2026, 11, 30, 14, 0)),
    "Thursday 22:00 PDT (Friday in New York), business days: Tuesday 22:00 PDT": (
        "America/Los_Angeles", utc(2026, 7, 3, 5, 0), BUSINESS, utc(2026, 7, 8, 5, 0)),
    "the same instant in New York is the holiday itself: Tuesday 01:00 EDT": (
        "America/New_York", utc(2026, 7, 3, 5, 0), BUSINESS, utc(2026, 7, 7, 5, 0)),
    "Friday 17:30 IST, business days: Tuesday 17:30 IST": (
        "Asia/Kolkata", utc(2026, 6, 5, 12, 0), BUSINESS, utc(2026, 6, 9, 12, 0)),
    "Berlin before Christmas with German holidays: Monday 12-28 is the first": (
        "Europe/Berlin", utc(2026, 12, 24, 9, 0),
        dataclasses.replace(BUSINESS, holiday_country="DE"), utc(2026, 12, 29, 9, 0)),
    "a 24 h elapsed window": (
        "America/New_York", THURSDAY, dataclasses.replace(ELAPSED, window=timedelta(hours=24)),
        utc(2026, 7, 3, 14, 0)),
    "one business day": (
        "America/New_York", THURSDAY, dataclasses.replace(BUSINESS, business_days=1),
        utc(2026, 7, 6, 14, 0)),
}


@pytest.mark.parametrize(("zone", "opened_at", "window", "expected"),
                         list(WINDOW_CASES.values()), ids=list(WINDOW_CASES))
def test_escalates_at(zone: str, opened_at: datetime, window: ResponseWindow,
                      expected: datetime) -> None:
    assert escalates_at(opened_at, ZoneInfo(zone), window) == expected


def test_the_shipped_window_is_48_elapsed_hours(policy: Policy) -> None:
    assert policy.response_window == ELAPSED


# --- closing an item ----------------------------------------------------------------------

CLOSE_AT = utc(2026, 7, 3, 15, 0)   # Friday 11:00 EDT, before the deadline


def opened_ledger(policy: Policy, *, message: bool = False, **kw: Any) -> Ledger:
    ledger = Ledger(**kw)
    ledger.apply(received(THURSDAY) if message else requested(THURSDAY), THURSDAY, policy)
    return ledger


def assert_closed(result: Plan, ref: str, reason: str, at: datetime) -> None:
    assert result.outcome == "applied"
    assert result.cancel == (ref,)
    record = result.records[ref]
    assert isinstance(record, OpenItemRecord)
    assert (record.status, record.closed_reason, record.updated_at, record.opened_at) == (
        "closed", reason, at, THURSDAY)
    queue = result.records[QUEUE_REF]
    assert isinstance(queue, ProviderQueueRecord)
    assert ref not in queue.items
    assert queue.updated_at == at


def test_refill_sent_closes_the_item_and_tells_the_client(policy: Policy) -> None:
    result = opened_ledger(policy).plan(sent(CLOSE_AT), CLOSE_AT, policy)
    assert_closed(result, REQ_REF, "sent", CLOSE_AT)
    assert rows(result) == {f"refill_sent:{REQUEST}:sent:sms": (
        "client", CLIENT, REQ_REF, CLOSE_AT, CLOSE_AT + timedelta(days=2), "scheduled")}
    assert result.add[0].params == {"provider_id": PROVIDER}


def test_refill_sent_at_night_is_held_until_morning(policy: Policy) -> None:
    night = utc(2026, 7, 3, 2, 0)   # 22:00 EDT
    result = opened_ledger(policy).plan(sent(night), night, policy)
    assert rows(result) == {f"refill_sent:{REQUEST}:sent:sms": (
        "client", CLIENT, REQ_REF, utc(2026, 7, 3, 12, 0), night + timedelta(days=2),
        "scheduled")}


def test_refill_denied_for_another_reason_closes_quietly(policy: Policy) -> None:
    result = opened_ledger(policy).plan(denied(CLOSE_AT, "other"), CLOSE_AT, policy)
    assert_closed(result, REQ_REF, "denied", CLOSE_AT)
    assert result.add == ()


def test_refill_denied_with_visit_required_asks_for_a_visit_at_once(policy: Policy) -> None:
    # Filled 2026-06-10 for 30 days: run-out 07-10, book by 07-08.
    result = opened_ledger(policy).plan(denied(CLOSE_AT, "visit_required"), CLOSE_AT, policy)
    assert_closed(result, REQ_REF, "denied", CLOSE_AT)
    visitreq = f"visitreq:{REQUEST}"  # the request's shard, its event's (docs/cluster.md)
    assert rows(result) == {
        f"visit_required:{REQUEST}:denied:{channel}": (
            "client", CLIENT, visitreq, CLOSE_AT, CLOSE_AT + timedelta(days=14), "scheduled")
        for channel in ("sms", "email")}
    for n in result.add:
        assert n.params == {"provider_id": PROVIDER, "prescription_id": RX,
                            "runout": "2026-07-10", "book_by": "2026-07-08"}


def test_refill_denied_with_visit_required_for_an_unknown_prescription(policy: Policy) -> None:
    ledger = opened_ledger(policy, filled_on=None)
    result = ledger.plan(denied(CLOSE_AT, "visit_required"), CLOSE_AT, policy)
    assert [(n.kind, n.params) for n in result.add] == [
        ("visit_required", {"provider_id": PROVIDER})] * 2


def test_message_answered_closes_the_message(policy: Policy) -> None:
    result = opened_ledger(policy, message=True).plan(answered(CLOSE_AT), CLOSE_AT, policy)
    assert_closed(result, MSG_REF, "answered", CLOSE_AT)
    assert result.add == ()


def test_closing_one_item_leaves_the_others_in_the_queue(policy: Policy) -> None:
    ledger = opened_ledger(policy)
    ledger.apply(received(THURSDAY), THURSDAY, policy)
    result = ledger.apply(sent(CLOSE_AT), CLOSE_AT, policy)
    queue = result.records[QUEUE_REF]
    assert isinstance(queue, ProviderQueueRecord)
    assert list(queue.items) == [MSG_REF]


@pytest.mark.parametrize(("make_close", "ref", "reason"), [
    (sent, REQ_REF, "sent"),
    (lambda at: denied(at, "visit_required"), REQ_REF, "denied"),
    (answered, MSG_REF, "answered"),
], ids=["refill.sent", "refill.denied", "message.answered"])
def test_a_close_for_an_unknown_item_leaves_a_tombstone(policy: Policy, make_close: Any,
                                                        ref: str, reason: str) -> None:
    result = Ledger().plan(make_close(CLOSE_AT), CLOSE_AT, policy)
    kind = ref.split(":", 1)[0]
    assert (result.outcome, result.reason, result.add, result.cancel) == (
        "ignored", f"unknown {kind}; recorded as closed", (), ())
    assert result.records == {ref: OpenItemRecord(
        id=ref.split(":", 1)[1], kind=kind, status="closed",  # type: ignore[arg-type]
        closed_reason=reason, updated_at=CLOSE_AT)}


@pytest.mark.parametrize("make_open", [requested, received], ids=["request", "message"])
def test_an_open_arriving_after_its_close_is_stale(policy: Policy, make_open: Any) -> None:
    ledger = Ledger()
    close = sent(CLOSE_AT) if make_open is requested else answered(CLOSE_AT)
    ledger.apply(close, CLOSE_AT, policy)
    result = ledger.plan(make_open(THURSDAY), CLOSE_AT + timedelta(minutes=5), policy)
    assert (result.outcome, result.add, result.cancel, result.records) == ("stale", (), (), {})


def test_a_second_close_is_ignored(policy: Policy) -> None:
    ledger = opened_ledger(policy)
    ledger.apply(sent(CLOSE_AT), CLOSE_AT, policy)
    later = CLOSE_AT + timedelta(hours=1)
    result = ledger.plan(denied(later), later, policy)
    assert (result.outcome, result.reason, result.add, result.cancel, result.records) == (
        "ignored", "already closed (sent)", (), (), {})


# --- property: events of one item in any order, through a simulated store ----------------

@dataclass
class Stored:
    n: PlannedNotification
    state: str


@dataclass
class Store:
    """What `Store.apply_event` and the sender do, as far as these properties need: records
    replaced, cancellation by entity, the first plan of an id wins unless it was cancelled,
    and due notifications sent (or expired) as time passes."""

    ledger: Ledger
    notifications: dict[str, Stored] = field(default_factory=dict)
    #: every id that entered the `scheduled` state, once per time it did
    scheduled_log: list[str] = field(default_factory=list)

    def advance(self, now: datetime) -> None:
        for stored in self.notifications.values():
            if stored.state == "scheduled" and stored.n.due_at <= now:
                stored.state = "sent" if stored.n.due_at < stored.n.expires_at else "expired"

    def apply(self, evt: Event, now: datetime, policy: Policy) -> Plan:
        self.advance(now)
        result = self.ledger.apply(evt, now, policy)
        for ref in result.cancel:
            for stored in self.notifications.values():
                if stored.state == "scheduled" and ref == stored.n.entity:
                    stored.state = "cancelled"
        for n in result.add:
            existing = self.notifications.get(n.id)
            if existing is not None and existing.state != "cancelled":
                continue
            self.notifications[n.id] = Stored(n, n.state)
            if n.state == "scheduled":
                self.scheduled_log.append(n.id)
        return result

    def escalations(self, *states: str) -> list[str]:
        return [i for i, s in self.notifications.items()
                if s.n.kind == "support_escalation" and s.state in states]


CLOSERS = {
    "refill.sent": (requested, sent),
    "refill.denied": (requested, lambda at: denied(at, "other")),
    "refill.denied visit_required": (requested, lambda at: denied(at, "visit_required")),
    "message.answered": (received, answered),
}
minutes = st.integers(min_value=0, max_value=96 * 60).map(lambda m: timedelta(minutes=m))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(closer=st.sampled_from(sorted(CLOSERS)),
       opened_at=st.datetimes(min_value=datetime(2026, 1, 1), max_value=datetime(2027, 12, 31),
                              timezones=st.just(UTC)).map(lambda d: d.replace(microsecond=0)),
       gap=st.integers(min_value=1, max_value=72 * 60).map(lambda m: timedelta(minutes=m)),
       mode=st.sampled_from(["elapsed", "business_days"]),
       provider_zone=st.sampled_from(["America/New_York", "Europe/Berlin", "Asia/Kolkata"]),
       redelivered=st.sampled_from([None, 0, 1]),
       data=st.data())
def test_one_alert_at_most_and_none_once_closed_in_time(
    policy: Policy, closer: str, opened_at: datetime, gap: timedelta, mode: str,
    provider_zone: str, redelivered: int | None, data: st.DataObject,
) -> None:
    custom = policy if mode == "elapsed" else business_days(policy)
    make_open, make_close = CLOSERS[closer]
    events = [make_open(opened_at), make_close(opened_at + gap)]
    if redelivered is not None:
        events.append(events[redelivered])
    order = data.draw(st.permutations(events), label="order")
    store = Store(Ledger(provider_zone=provider_zone))
    deadline = escalates_at(opened_at, ZoneInfo(provider_zone), custom.response_window)
    now, close_processed_at = opened_at, None
    for evt in order:
        now = max(now, evt.occurred_at) + data.draw(minutes, label="processing delay")
        store.apply(evt, now, custom)
        if evt.type == events[1].type and close_processed_at is None:
            close_processed_at = now
        for channel in ("email", "sms"):
            ever = [i for i in store.scheduled_log
                    if i.startswith("support_escalation:") and i.endswith(f":{channel}")]
            assert len(ever) <= 1, ever
    assert close_processed_at is not None
    if opened_at + gap < deadline:
        assert store.escalations("scheduled") == []
    states = sorted(store.notifications[i].state for i in store.escalations(
        "scheduled", "sent", "cancelled", "expired"))
    if order.index(events[0]) > order.index(events[1]):
        # The close came first: the open is stale and nothing was ever planned for it.
        assert states == []
    elif close_processed_at >= deadline:
        # Still open when the deadline passed: support heard of it, once per channel.
        assert states == ["sent", "sent"]
    else:
        assert states == ["cancelled", "cancelled"]


def test_a_refill_request_and_a_message_with_the_same_id_escalate_separately(
        policy: Policy) -> None:
    ledger = Ledger()
    shared = "42"
    request = ledger.apply(requested(THURSDAY, request_id=shared), THURSDAY, policy)
    message = ledger.apply(parsed_event("message.received", {"message": {
        "id": shared, "client_id": CLIENT, "provider_id": PROVIDER}}, THURSDAY), THURSDAY,
        policy)
    request_ids = {n.id for n in request.add}
    message_ids = {n.id for n in message.add}
    assert not request_ids & message_ids
    assert "support_escalation:42:message-window:email" in message_ids


def test_a_request_applied_after_a_newer_fill_leaves_that_fills_reminders(
        policy: Policy) -> None:
    """A new fill posted a moment after an older refill request may be applied first (a
    new user's trial: 4 in 20): the request must not cancel the new fill's reminders,
    which are the next refill's. It still opens its item and records `refill_asked`."""
    ledger = Ledger()
    newer = prescription_record(date(2026, 7, 2)).model_copy(
        update={"updated_at": THURSDAY + timedelta(minutes=1)})
    ledger.records[f"prescription:{RX}"] = newer
    result = ledger.plan(requested(THURSDAY), THURSDAY + timedelta(minutes=2), policy)
    assert result.outcome == "applied" and result.cancel == ()
    assert result.records[f"refill_asked:{RX}"] == RefillAskedRecord(updated_at=THURSDAY)
