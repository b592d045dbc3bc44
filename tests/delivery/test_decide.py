"""The send-time rules of `delivery.decide`, as tables: no Redis, no templates, no channels.

Each row is a notification, the facts read so far and the time, and the decision expected,
outlined as a tuple (`outline`). `tests/delivery/test_deliverer.py` runs the same rules end
to end.
"""

from __future__ import annotations

import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from notifier.config import Settings
from notifier.delivery.compose import Stored
from notifier.delivery.decide import (
    NEVER_TOLD,
    SENT_AS_CONFIRMATION,
    WAIT_FOR_CLIENT_S,
    Facts,
    FinishAs,
    HoldUntil,
    Outcome,
    Read,
    SendDigest,
    SendToClient,
    SendToSupport,
    UseOtherChannel,
    decide,
    last_look,
    paced,
    record_refs,
    told_of,
)
from notifier.delivery.sms_budget import OverBudget
from notifier.intake.events import Appointment, Client, Provider
from notifier.ledger.records import (
    AppointmentRecord,
    ClientRecord,
    OpenItem,
    ProviderQueueRecord,
    ProviderRecord,
    Record,
    VisitsRecord,
)
from notifier.policy.common import QUIET_HOURS_PAST_EXPIRY

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)  # 10:00 in New York
NIGHT = datetime(2026, 11, 25, 7, 0, tzinfo=UTC)  # 02:00 in New York: quiet hours until 08:00
MORNING = datetime(2026, 11, 25, 13, 0, tzinfo=UTC)  # 08:00 in New York
START = NOW + timedelta(days=10)
SETTINGS = Settings()


class Fixed(random.Random):
    def __init__(self, value: float) -> None:
        super().__init__()
        self.value = value

    def random(self) -> float:
        return self.value


def note(kind: str = "appointment_reminder", channel: str = "email", *,
         recipient: str = "client", recipient_id: str = "c1", due_at: datetime = NOW,
         expires_at: datetime = START, **params: Any) -> Stored:
    params = {"appointment_id": "a1", "provider_id": "prov-1", **params}
    return Stored(id=f"{kind}:a1:x:{channel}", kind=kind, channel=channel, recipient=recipient,
                  recipient_id=recipient_id, due_at=due_at, expires_at=expires_at,
                  params=params, attempts=1, entity="appointment:a1")


def client(*, sms: bool = True, email: bool = True, phone: str | None = "+14155550123",
           address: str | None = "c1@example.com") -> ClientRecord:
    return ClientRecord(updated_at=NOW, client=Client.model_validate({
        "id": "c1", "first_name": "Ana", "timezone": "America/New_York", "phone": phone,
        "email": address, "channels": {"sms": sms, "email": email}}))


PROVIDER = ProviderRecord(updated_at=NOW, provider=Provider(
    id="prov-1", name="Dr. Rivera", email="rivera@example.com", timezone="America/Chicago"))


def appointment(join_url: str | None = None) -> AppointmentRecord:
    return AppointmentRecord(updated_at=NOW, appointment=Appointment.model_validate({
        "id": "a1", "client_id": "c1", "provider_id": "prov-1", "start": START,
        "end": START + timedelta(minutes=30), "kind": "therapy", "join_url": join_url}))


def records(*extra: tuple[str, Record], with_client: ClientRecord | None = None,
            ) -> dict[str, Record]:
    found: dict[str, Record] = {"client:c1": with_client or client(), "provider:prov-1": PROVIDER,
                                "appointment:a1": appointment()}
    found.update(extra)
    return found


def known(**changes: Any) -> Facts:
    """Every fact read, nothing in the way: the client is known, told, not opted out."""
    return replace(Facts(unapplied=False, records=records(), told="told", opted_out=False),
                   **changes)


def outline(decision: object) -> tuple[Any, ...]:
    """A decision as the rows spell it: holds by their distance from NOW."""
    if isinstance(decision, Read):
        return ("read", decision.fact) + ((decision.phone,) if decision.phone else ())
    if isinstance(decision, FinishAs):
        return (decision.state, decision.reason)
    if isinstance(decision, HoldUntil):
        return ("hold", (decision.due - NOW).total_seconds(), decision.reason,
                decision.outcome)
    if isinstance(decision, UseOtherChannel):
        return ("other channel", decision.reason)
    if isinstance(decision, SendToClient):
        return ("send", decision.n.kind, decision.note, decision.n.params.get("join_url"))
    if isinstance(decision, SendToSupport):
        return ("send to support",)
    if isinstance(decision, SendDigest):
        return ("send digest", sorted(decision.queue.items))
    raise AssertionError(decision)


VISITS_LATER = ("visits:c1", VisitsRecord(updated_at=NOW, upcoming={"a2": NOW + timedelta(days=3)}))
QUEUE = ProviderQueueRecord(updated_at=NOW, items={"message:m1": OpenItem(
    kind="message", client_id="c1", opened_at=NOW - timedelta(days=1),
    escalates_at=NOW + timedelta(days=1))})
SENDING_WAIT = 1.0 * (1 + 0.25)  # WAIT_FOR_SENDING_S, jittered by the rng's 0.25

CLIENT_ROWS = [
    # expiry comes first, before anything is read
    ("expired", note(due_at=NOW - timedelta(hours=2), expires_at=NOW - timedelta(hours=1)),
     Facts(), NOW,
     ("expired", "the workers reached it only after its expiry, 2 h after it was due")),
    ("expired at the instant", note(expires_at=NOW), known(), NOW,
     ("expired", "the workers reached it only after its expiry, 0 s after it was due")),
    # the unapplied-events check, then the records
    ("nothing read yet", note(), Facts(), NOW, ("read", "unapplied")),
    ("an accepted event unapplied", note(), known(unapplied=True), NOW,
     ("hold", 1.0, "waiting for an accepted event about it to be applied", Outcome.WAITING)),
    ("records not read yet", note(), Facts(unapplied=False), NOW, ("read", "records")),
    # the client
    ("client unknown: waited for", note(), known(records={}), NOW,
     ("hold", WAIT_FOR_CLIENT_S, "waiting for client details", Outcome.WAITING)),
    ("client unknown: given up", note(expires_at=NOW + timedelta(seconds=WAIT_FOR_CLIENT_S)),
     known(records={}), NOW, ("suppressed", "client details never arrived")),
    # quiet hours, client-local
    ("quiet hours: held", note(), known(), NIGHT,
     ("hold", (MORNING - NOW).total_seconds(), "quiet hours", Outcome.HELD)),
    ("quiet hours: past expiry", note(expires_at=MORNING), known(), NIGHT,
     ("expired", QUIET_HOURS_PAST_EXPIRY)),
    ("quiet hours: over at 08:00", note(), known(), MORNING,
     ("send", "appointment_reminder", "", None)),
    # visit nudges, against the client's bookings now
    ("follow-up: a later visit booked", note("follow_up", expires_at=NOW + timedelta(days=7)),
     known(records=records(VISITS_LATER)), NOW, ("suppressed", "a later visit is booked")),
    ("follow-up: no visits record", note("follow_up"), known(), NOW,
     ("send", "follow_up", "", None)),
    ("visit required: one booked in time", note("visit_required", expires_at=START),
     known(records=records(VISITS_LATER)), NOW, ("suppressed", "a visit is booked")),
    ("visit required: the booking is after its expiry",
     note("visit_required", expires_at=NOW + timedelta(days=2)),
     known(records=records(VISITS_LATER)), NOW, ("send", "visit_required", "", None)),
    # a message about a booking the client may never have heard of
    ("cancellation: told not read yet", note("appointment_cancelled"), known(told=None), NOW,
     ("read", "told")),
    ("cancellation: never told", note("appointment_cancelled"), known(told="never"), NOW,
     ("suppressed", NEVER_TOLD)),
    ("cancellation: told", note("appointment_cancelled"), known(), NOW,
     ("send", "appointment_cancelled", "", None)),
    ("cancellation: wait while another is sending", note("appointment_cancelled"),
     known(told="wait"), NOW,
     ("hold", SENDING_WAIT, "waiting for another message about this appointment to be sent",
      Outcome.WAITING)),
    ("update: never told, sent as a confirmation", note("appointment_updated"),
     known(told="never"), NOW, ("send", "appointment_confirmation", SENT_AS_CONFIRMATION, None)),
    ("update: wait while another is sending", note("appointment_updated"), known(told="wait"),
     NOW, ("hold", SENDING_WAIT,
           "waiting for another message about this appointment to be sent", Outcome.WAITING)),
    ("never told goes before the closed channel", note("appointment_cancelled", "sms"),
     known(told="never", records=records(with_client=client(sms=False))), NOW,
     ("suppressed", NEVER_TOLD)),
    ("a reminder does not ask whether they were told", note(), known(told=None), NOW,
     ("send", "appointment_reminder", "", None)),
    # the channel, closed to the client now: suppressed here, the other channel instead
    ("sms: opt-outs not read yet", note(channel="sms"), known(opted_out=None), NOW,
     ("read", "opted_out", "+14155550123")),
    ("sms: replied STOP", note(channel="sms"), known(opted_out=True), NOW,
     ("other channel", "client replied STOP")),
    ("sms: not accepted, opt-outs not needed", note(channel="sms"),
     known(opted_out=None, records=records(with_client=client(sms=False))), NOW,
     ("other channel", "client does not accept sms")),
    ("sms: no phone", note(channel="sms"),
     known(opted_out=None, records=records(with_client=client(phone=None))), NOW,
     ("other channel", "no phone number")),
    ("sms: open", note(channel="sms"), known(), NOW, ("send", "appointment_reminder", "", None)),
    ("email: not accepted", note(), known(records=records(with_client=client(email=False))), NOW,
     ("other channel", "client does not accept email")),
    ("email: no address", note(), known(records=records(with_client=client(address=None))), NOW,
     ("other channel", "no email address")),
    # the video link is the appointment's as it is now
    ("join link gone", note("appointment_join_link"), known(), NOW,
     ("suppressed", "the visit no longer has a video link")),
    ("join link changed", note("appointment_join_link", join_url="https://v.example.com/old"),
     known(records=records(("appointment:a1", appointment("https://v.example.com/new")))), NOW,
     ("send", "appointment_join_link", "", "https://v.example.com/new")),
    ("join link, no appointment record", note("appointment_join_link", join_url="https://x.io/"),
     known(records={"client:c1": client()}), NOW,
     ("send", "appointment_join_link", "", "https://x.io/")),
]

STAFF_ROWS = [
    ("support sms without a support phone", note("support_escalation", "sms",
                                                 recipient="support", recipient_id="support"),
     Facts(unapplied=False), SETTINGS, ("suppressed", "NOTIFIER_SUPPORT_PHONE is not set")),
    ("support sms with a support phone", note("support_escalation", "sms", recipient="support",
                                              recipient_id="support"),
     Facts(unapplied=False, records={}), replace(SETTINGS, support_phone="+14155550100"),
     ("send to support",)),
    ("support email: records not read yet", note("support_escalation", recipient="support",
                                                 recipient_id="support"),
     Facts(unapplied=False), SETTINGS, ("read", "records")),
    ("support email, at night too", note("support_escalation", recipient="support",
                                         recipient_id="support"),
     Facts(unapplied=False, records={}), SETTINGS, ("send to support",)),
    ("digest: nothing open", note("provider_digest", recipient="provider", recipient_id="prov-1"),
     Facts(unapplied=False, records={"provider:prov-1": PROVIDER}), SETTINGS,
     ("suppressed", "nothing open")),
    ("digest: empty queue", note("provider_digest", recipient="provider", recipient_id="prov-1"),
     Facts(unapplied=False, records={"provider:prov-1": PROVIDER, "provider_queue:prov-1":
                                     ProviderQueueRecord(updated_at=NOW)}), SETTINGS,
     ("suppressed", "nothing open")),
    ("digest: unknown provider", note("provider_digest", recipient="provider",
                                      recipient_id="prov-1"),
     Facts(unapplied=False, records={"provider_queue:prov-1": QUEUE}), SETTINGS,
     ("suppressed", "unknown provider")),
    ("digest: something open", note("provider_digest", recipient="provider",
                                    recipient_id="prov-1"),
     Facts(unapplied=False, records={"provider:prov-1": PROVIDER, "provider_queue:prov-1": QUEUE}),
     SETTINGS, ("send digest", ["message:m1"])),
    ("no route", note(recipient="robot"), Facts(unapplied=False), SETTINGS,
     ("failed", "no route for recipient robot")),
]


@pytest.mark.parametrize(("n", "facts", "now", "expected"),
                         [row[1:] for row in CLIENT_ROWS], ids=[row[0] for row in CLIENT_ROWS])
def test_client_rules(policy, n, facts, now, expected):
    assert outline(decide(n, facts, now, policy=policy, settings=SETTINGS,
                          rng=Fixed(0.25))) == expected


@pytest.mark.parametrize(("n", "facts", "settings", "expected"),
                         [row[1:] for row in STAFF_ROWS], ids=[row[0] for row in STAFF_ROWS])
def test_staff_rules(policy, n, facts, settings, expected):
    # NIGHT: quiet hours are the clients', not the staff's
    assert outline(decide(n, facts, NIGHT, policy=policy, settings=settings,
                          rng=Fixed(0.25))) == expected


def test_the_records_of_a_client_message_go_with_the_send(policy):
    decision = decide(note(), known(), NOW, policy=policy, settings=SETTINGS, rng=Fixed(0))
    assert isinstance(decision, SendToClient)
    assert (decision.client, decision.provider, decision.prescription) == (
        client(), PROVIDER, None)


@pytest.mark.parametrize(("n", "facts", "reads"), [
    # a cancellation by SMS reads all four facts, in this order
    (note("appointment_cancelled", "sms"), Facts(), ["unapplied", "records", "told",
                                                      "opted_out"]),
    (note(), Facts(), ["unapplied", "records"]),
    # a hold reads nothing past the rule that holds it
    (note("appointment_cancelled", "sms"), Facts(unapplied=True), []),
])
def test_each_fact_is_asked_for_once_and_only_when_a_rule_needs_it(policy, n, facts, reads):
    asked: list[str] = []
    answers = known()
    for _ in range(5):
        decision = decide(n, facts, NOW, policy=policy, settings=SETTINGS, rng=Fixed(0))
        if not isinstance(decision, Read):
            break
        asked.append(decision.fact)
        facts = replace(facts, **{decision.fact: getattr(answers, decision.fact)})
    assert asked == reads


def test_quiet_hours_are_not_a_reason_to_read_the_opt_outs(policy):
    facts = Facts(unapplied=False, records=records())
    assert outline(decide(note(channel="sms"), facts, NIGHT, policy=policy, settings=SETTINGS,
                          rng=Fixed(0)))[0] == "hold"


@pytest.mark.parametrize(("n", "refs"), [
    (note(), ["client:c1", "provider:prov-1", "appointment:a1"]),
    (note("refill_due", appointment_id="", prescription_id="rx-1"),
     ["client:c1", "provider:prov-1", "prescription:rx-1"]),
    # the visits record comes in the same read as the rest
    (note("follow_up", appointment_id=""), ["client:c1", "provider:prov-1", "visits:c1"]),
    (note("support_escalation", recipient="support"), ["provider:prov-1"]),
    (note("provider_digest", recipient="provider", recipient_id="prov-1"),
     ["provider:prov-1", "provider_queue:prov-1"]),
    (note(recipient="robot"), []),
])
def test_the_records_read_in_one_round_trip(n, refs):
    assert record_refs(n) == refs


@pytest.mark.parametrize(("about", "told"), [
    ({}, "told"),
    # the message itself and its twin on the other channel do not count
    ({"appointment_confirmation:a1:booked:email": ("client", "suppressed"),
      "appointment_cancelled:a1:x:sms": ("client", "sending")}, "never"),
    ({"appointment_confirmation:a1:booked:email": ("client", "sent")}, "told"),
    ({"appointment_confirmation:a1:booked:email": ("client", "sending")}, "wait"),
    # an expired entry may have gone out
    ({"appointment_confirmation:a1:booked:email": None}, "told"),
    # messages to staff do not count
    ({"appointment_confirmation:a1:booked:email": ("client", "cancelled"),
      "provider_no_show:a1:x:email": ("provider", "sent")}, "never"),
])
def test_told_of_the_booking(about, told):
    assert told_of(note("appointment_cancelled", "email"), about) == told


@pytest.mark.parametrize(("superseded", "unapplied", "expected"), [
    (False, False, None),
    (True, True, ("hold", 0.0, "superseded while being prepared", Outcome.CANCELLED)),
    (False, True, ("hold", 1.0, "waiting for an accepted event about it to be applied",
                   Outcome.WAITING)),
])
def test_the_last_look(superseded, unapplied, expected):
    got = last_look(superseded, unapplied, NOW)
    assert (got if got is None else outline(got)) == expected
    if isinstance(got, HoldUntil):
        assert got.not_an_attempt is (not superseded)


@pytest.mark.parametrize(("slot", "expected"), [
    (NOW, None),
    (NOW + timedelta(seconds=3), ("hold", 3.0, "paced by the send rate", Outcome.PACED)),
    (START, ("expired", "the send rate could not fit it in before it expired")),
])
def test_pacing(slot, expected):
    got = paced(note(), slot, NOW)
    assert (got if got is None else outline(got)) == expected
    if isinstance(got, HoldUntil):
        assert (got.slot, got.not_an_attempt) == (slot.timestamp(), True)


def test_an_sms_over_budget_goes_by_the_other_channel():
    from notifier.delivery.decide import over_budget
    from notifier.delivery.sms_text import SmsSize

    exc = OverBudget("sms/x.en", SmsSize(encoding="GSM-7", segments=3, units=400))
    got = over_budget(exc, client())
    assert got.reason.startswith("over the SMS budget: ")
    assert dict(got.fields) == {"sms_encoding": "GSM-7", "sms_segments": 3}


def test_outcomes_compare_equal_to_their_names():
    assert Outcome.SENT == "sent" and Outcome("not_due") is Outcome.NOT_DUE
    assert str(Outcome.WAITING) == "waiting"
