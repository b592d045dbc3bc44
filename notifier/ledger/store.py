"""The ledger's one handle, as the worker, the web and the CLI hold it: `Store` composes the
parts, each of one concern, and forwards to them, so callers hold one object.

- `events` (`notifier.ledger.events.Events`): storing, queueing, holding and rejecting
  events, and their statuses;
- `records` (`notifier.ledger.record_store.RecordStore`): entity records, the providers
  set, the per-number and per-address indexes of clients and each client's entities;
- `plans` (`notifier.ledger.plans.PlanWriter`): applying a stored event's plan exactly
  once, or writing a cron job's;
- `reading` (`notifier.ledger.reading.Reading`): notifications as the read API shows them,
  an entity's, upcoming appointments, send blockers, /metrics figures;
- `deliveries` (`notifier.ledger.deliveries.Deliveries`): delivery reports, other channels;
- `opt_outs` (`notifier.ledger.optouts.OptOuts`): numbers opted out of SMS;
- `reports` (`notifier.ledger.reports.Reports`): sends awaiting a delivery report, for the
  clock's repair job;
- `schedule`, `turns`, `short_links`: the notification ledger, per-subject turns and short
  links (`notifier.ledger.notifications`, `.turns`, `.shortlinks`);
- `trimmer` (`notifier.ledger.trimming.IndexTrimmer`): the clock's trimming of the
  indexes of notification ids.

Errors: `Store` puts the client it is given behind `ledger_client`, so every Redis call
below raises `StoreUnavailable` when Redis cannot be reached or take commands now and
`StoreError` when it refuses one; each method forwards to one part, whose docstring says
what it returns and the errors of its own (`StoreContention`, `TurnLost`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from typing import Any, Literal

import redis

from notifier.ledger.audit_write import AuditWrite
from notifier.ledger.client import ledger_client
from notifier.ledger.deliveries import Deliveries
from notifier.ledger.events import Events
from notifier.ledger.notifications import KEEP_FINISHED_S, Schedule
from notifier.ledger.optouts import OptOuts
from notifier.ledger.plans import Decide, PlanWriter
from notifier.ledger.reading import LedgerFigures, NotificationRow, Reading
from notifier.ledger.record_store import RecordStore
from notifier.ledger.records import AppointmentRecord, ClientRecord, ProviderRecord, Record
from notifier.ledger.reports import Reports
from notifier.ledger.shards import DEFAULT_SHARDS, ShardKeys
from notifier.ledger.shortlinks import ShortLinks
from notifier.ledger.trimming import IndexTrimmer
from notifier.ledger.turns import Turns
from notifier.policy.plan import Plan
from notifier.webhooks.catalogue import Announcement


class Store:
    """The parts of the ledger over one Redis client, and their methods forwarded."""

    def __init__(self, client: redis.Redis, keep_finished_s: int = KEEP_FINISHED_S,
                 history_s: int = 0, shards: int = DEFAULT_SHARDS) -> None:
        """`keep_finished_s`: the retention (`NOTIFIER_RETENTION_DAYS`), seconds;
        `history_s`: how long a retired notification's content-free row is kept after it
        (`NOTIFIER_HISTORY_DAYS`), seconds; `shards`: the ledger's shard count
        (`NOTIFIER_LEDGER_SHARDS`, `notifier.ledger.shards`; ValueError outside 1..1024).
        Makes no Redis call: start-up checks the count against the ledger's
        (`shards.check_shards`)."""
        # Redis failures raise StoreUnavailable / StoreError. redis-py types its replies as
        # a sync|async union; the client here is sync.
        ledger: Any = ledger_client(client)
        self.redis: Any = ledger
        client = ledger
        #: the shard count and the keys built with it, which every part is given
        self.keys = ShardKeys(shards)
        self.schedule = Schedule(client, keep_finished_s, history_s, keys=self.keys)
        self.trimmer = IndexTrimmer(client, keep_finished_s, history_s, keys=self.keys)
        self.turns = Turns(client, self.keys)
        self.short_links = ShortLinks(client)
        self.events = Events(client, keys=self.keys)
        self.records = RecordStore(client, keys=self.keys)
        self.plans = PlanWriter(client, self.schedule, self.records)
        self.reading = Reading(client, self.records, self.keys)
        self.deliveries = Deliveries(client, self.schedule, self.reading, self.plans)
        self.opt_outs = OptOuts(client, self.records, keys=self.keys)
        self.reports = Reports(client, self.schedule)

    # Events ---------------------------------------------------------------------------
    def store_event(self, event_id: str, raw: bytes, now: datetime, subject: str | None = None,
                    occurred_at: datetime | None = None) -> bool:
        """`Events.store_event`."""
        return self.events.store_event(event_id, raw, now, subject, occurred_at)

    def event_subject(self, event_id: str) -> tuple[str | None, str | None]:
        """`Events.event_subject`."""
        return self.events.event_subject(event_id)

    def queue_event(self, event_id: str, subject: str, occurred_at: datetime) -> None:
        """`Events.queue_event`."""
        self.events.queue_event(event_id, subject, occurred_at)

    def event_status(self, event_id: str) -> dict[str, str]:
        """`Events.event_status`."""
        return self.events.event_status(event_id)

    def unapplied_events(self, older_than: datetime, now: datetime, limit: int = 500,
                         shards: Iterable[int] | None = None) -> list[str]:
        """`Events.unapplied_events`."""
        return self.events.unapplied_events(older_than, now, limit, shards)

    def count_apply_failure(self, event_id: str) -> int:
        """`Events.count_apply_failure`."""
        return self.events.count_apply_failure(event_id)

    def release_expired_holds(self, now: datetime, limit: int = 500,
                              shards: Iterable[int] | None = None) -> list[str]:
        """`Events.release_expired_holds`."""
        return self.events.release_expired_holds(now, limit, shards)

    def reject_event(self, event_id: str, reason: str, now: datetime,
                     status: str = "rejected") -> None:
        """`Events.reject_event`."""
        self.events.reject_event(event_id, reason, now, status)

    # Records ----------------------------------------------------------------------------
    def load_records(self, refs: list[str], pipe: Any = None) -> dict[str, Record]:
        """`RecordStore.load_records`."""
        return self.records.load_records(refs, pipe)

    def load_record(self, ref: str) -> Record | None:
        """`RecordStore.load_record`."""
        return self.records.load_record(ref)

    def update_record(self, ref: str, change: Callable[[Record | None], Record | None],
                      announce: Sequence[Announcement] = ()) -> bool:
        """`RecordStore.update_record`."""
        return self.records.update_record(ref, change, announce)

    def provider_ids(self) -> list[str]:
        """`RecordStore.provider_ids`."""
        return self.records.provider_ids()

    def providers(self) -> list[ProviderRecord]:
        """`RecordStore.providers`."""
        return self.records.providers()

    def clients_for_phone(self, phone: str) -> list[ClientRecord]:
        """`RecordStore.clients_for_phone`."""
        return self.records.clients_for_phone(phone)

    def clients_for_email(self, email: str) -> list[ClientRecord]:
        """`RecordStore.clients_for_email`."""
        return self.records.clients_for_email(email)

    def client_entity_refs(self, client_ids: list[str]) -> dict[str, list[str]]:
        """`RecordStore.client_entity_refs`."""
        return self.records.client_entity_refs(client_ids)

    def reindex_clients(self) -> tuple[int, int, int]:
        """`RecordStore.reindex_clients`."""
        return self.records.reindex_clients()

    # Applying plans ----------------------------------------------------------------------
    def apply_event(self, event_id: str, decide: Decide, now: datetime,
                    turn: tuple[str, str] | None = None) -> Plan | None:
        """`PlanWriter.apply_event`."""
        return self.plans.apply_event(event_id, decide, now, turn)

    def write_plan(self, plan: Plan, now: datetime, audit: AuditWrite | None = None) -> int:
        """`PlanWriter.write_plan`."""
        return self.plans.write_plan(plan, now, audit)

    # Reading -----------------------------------------------------------------------------
    def figures(self) -> LedgerFigures:
        """`Reading.figures`."""
        return self.reading.figures()

    def send_blockers(self, notification_id: str, subjects: list[str]) -> tuple[bool, bool]:
        """`Reading.send_blockers`."""
        return self.reading.send_blockers(notification_id, subjects)

    def notification(self, notification_id: str) -> dict[str, str]:
        """`Reading.notification`."""
        return self.reading.notification(notification_id)

    def about_entity(self, entity: str) -> dict[str, tuple[str, str] | None]:
        """`Reading.about_entity`."""
        return self.reading.about_entity(entity)

    def notifications_for(self, recipient: str, recipient_id: str,
                          since: datetime | None = None) -> list[NotificationRow]:
        """`Reading.notifications_for`."""
        return self.reading.notifications_for(recipient, recipient_id, since)

    def upcoming_appointments(self, client_id: str, now: datetime) -> list[AppointmentRecord]:
        """`Reading.upcoming_appointments`."""
        return self.reading.upcoming_appointments(client_id, now)

    # Delivery reports and fallbacks ------------------------------------------------------
    def record_delivery(self, notification_id: str, status: str, code: str,
                        now: datetime, message_id: str = "") -> str | None:
        """`Deliveries.record_delivery`."""
        return self.deliveries.record_delivery(notification_id, status, code, now,
                                               message_id)

    def add_on_other_channel(self, notification_id: str, channel: str, now: datetime,
                             reason: str) -> bool:
        """`Deliveries.add_on_other_channel`."""
        return self.deliveries.add_on_other_channel(notification_id, channel, now, reason)

    # SMS opt-outs ------------------------------------------------------------------------
    def set_sms_opt_out(self, phone: str, opted_out: bool,
                        source: Literal["reply", "carrier", "operator"] = "reply",
                        code: str | None = None, audit: AuditWrite | None = None) -> bool:
        """`OptOuts.set_sms_opt_out`."""
        return self.opt_outs.set_sms_opt_out(phone, opted_out, source, code, audit)

    def sms_opted_out(self, phone: str) -> bool:
        """`OptOuts.sms_opted_out`."""
        return self.opt_outs.sms_opted_out(phone)
