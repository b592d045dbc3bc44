"""Deciding a batch of notifications at once: `decide` for each, its facts read for all.

`decide` (pure) asks for one fact at a time (`Read`). For a batch, every notification is
decided with what is known so far, the facts they ask for are read for all of them in one
round trip (the unapplied checks, one MGET of every record, one SMISMEMBER of every phone;
the `told` lookups take two more), and they are decided again, until every one has its
answer: a few round trips per batch, not a few per notification.

One step ahead: a notification that asks whether an event about it is unapplied gets its
records read in the same round trip, since every route but one (a support SMS with no
support phone) asks for them next; reading is harmless, and saves a round trip per batch.

A notification whose decision fails (a bug in a rule, a record that no longer parses, Redis
failing) gets the exception as its answer, never the others.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from dataclasses import fields, replace
from datetime import datetime

from notifier.config import Settings
from notifier.delivery.compose import Stored
from notifier.delivery.decide import (
    Facts,
    NoSend,
    Read,
    Send,
    decide,
    record_refs,
    subjects_of,
    told_of,
)
from notifier.ledger.batch import Batch, Reply
from notifier.ledger.record_store import parse_record
from notifier.ledger.records import Record
from notifier.ledger.store import Store
from notifier.policy.figures import Policy

log = logging.getLogger(__name__)

#: A decision asks for each fact at most once; more rounds than this is a bug in `decide`.
MAX_READS = len(fields(Facts))

Answer = Send | NoSend | Exception


class Records:
    """The records read for a batch, parsed once each on first use (a record that does not
    parse fails only the notifications that need it)."""

    def __init__(self) -> None:
        self._raw: dict[str, bytes | None] = {}
        self._parsed: dict[str, Record | Exception] = {}

    def missing(self, refs: Sequence[str]) -> list[str]:
        """Those of `refs` not read yet."""
        return [r for r in refs if r not in self._raw]

    def read(self, refs: Sequence[str]) -> list[str]:
        """Those of `refs` read already."""
        return [r for r in refs if r in self._raw]

    def raw(self, ref: str) -> bytes | None:
        """What was read of `ref`: its stored JSON, None for no record."""
        return self._raw[ref]

    def add(self, refs: Sequence[str], found: dict[str, bytes]) -> None:
        """What one read of `refs` found (a ref not in `found` has no record)."""
        for ref in refs:
            self._raw[ref] = found.get(ref)

    def of(self, refs: Sequence[str]) -> dict[str, Record]:
        """The records of `refs` that exist, by ref; raises what `parse_record` raises."""
        out: dict[str, Record] = {}
        for ref in refs:
            raw = self._raw[ref]
            if raw is None:
                continue
            if ref not in self._parsed:
                try:
                    self._parsed[ref] = parse_record(ref.split(":", 1)[0], raw)
                except Exception as exc:
                    self._parsed[ref] = exc
            record = self._parsed[ref]
            if isinstance(record, Exception):
                raise record
            out[ref] = record
        return out


def decide_all(store: Store, batch: Sequence[Stored], now: datetime, *, policy: Policy,
               settings: Settings, rng: random.Random,
               records: Records | None = None) -> list[Answer]:
    """The decision for each of `batch` at `now`, in order, or the exception that stopped
    it (logged here). Redis failures end as answers too (`StoreUnavailable`). `records`
    keeps what was read (for `queue_changed_since`)."""
    answers: list[Answer | None] = [None] * len(batch)
    facts = [Facts() for _ in batch]
    records = records if records is not None else Records()
    undecided = list(range(len(batch)))
    for _ in range(MAX_READS + 1):
        reads: dict[int, Read] = {}
        for i in undecided:
            try:
                decision = decide(batch[i], facts[i], now, policy=policy, settings=settings,
                                  rng=rng)
            except Exception as exc:
                log.exception("deciding on %s failed", batch[i].id)
                answers[i] = exc
                continue
            if isinstance(decision, Read):
                reads[i] = decision
            else:
                answers[i] = decision
        if not reads:
            break
        learnt = _read(store, {i: (batch[i], facts[i], r) for i, r in reads.items()}, records)
        for i, fact in learnt.items():
            if isinstance(fact, Exception):
                log.error("reading for %s failed: %s", batch[i].id, fact, exc_info=fact)
                answers[i] = fact
            else:
                facts[i] = fact
        undecided = [i for i in reads if answers[i] is None]
    for i in undecided:
        if answers[i] is None:
            answers[i] = AssertionError(f"decide kept asking for facts about {batch[i].id}")
    return [a if a is not None else AssertionError("undecided") for a in answers]


def _read(store: Store, asks: dict[int, tuple[Stored, Facts, Read]], records: Records,
          ) -> dict[int, Facts | Exception]:
    """Read what each of `asks` asks for, all in one round trip (plus two for `told`);
    returns each one's facts with the answer added, or what failed."""
    batch = Batch(store.redis)
    refs: list[str] = []
    phones: list[str] = []
    entities: list[str] = []
    unapplied: dict[int, Reply[bool]] = {}
    for i, (n, facts, read) in asks.items():
        if read.fact == "unapplied":
            unapplied[i] = store.turns.queue_unapplied_about(batch, subjects_of(n))
            if facts.records is None:  # one step ahead: see the module's docstring
                refs += record_refs(n)
        elif read.fact == "records":
            refs += record_refs(n)
        elif read.fact == "told":
            entities.append(n.entity)
        else:
            phones.append(read.phone)
    refs = records.missing(list(dict.fromkeys(refs)))
    found = store.records.queue_raw_records(batch, refs)
    opted_out = store.opt_outs.queue_opted_out(batch, list(dict.fromkeys(phones)))
    batch.run()
    out: dict[int, Facts | Exception] = {}
    try:
        records.add(refs, found.get())
    except Exception as exc:  # the round trip failed: every ask with it
        return dict.fromkeys(asks, exc)
    about: dict[str, dict[str, tuple[str, str] | None]] | Exception = {}
    if entities:
        try:
            about = store.reading.about_entities(entities)
        except Exception as exc:
            about = exc
    for i, (n, facts, read) in asks.items():
        try:
            if read.fact == "unapplied":
                facts = replace(facts, unapplied=unapplied[i].get())
                if facts.records is None:
                    facts = replace(facts, records=records.of(record_refs(n)))
            elif read.fact == "records":
                facts = replace(facts, records=records.of(record_refs(n)))
            elif read.fact == "told":
                if isinstance(about, Exception):
                    raise about
                facts = replace(facts, told=told_of(n, about.get(n.entity, {})))
            else:
                facts = replace(facts, opted_out=opted_out.get()[read.phone])
            out[i] = facts
        except Exception as exc:
            out[i] = exc
    return out


def queue_changed_since(store: Store, batch: Batch, n: Stored, sms_to: str | None,
                        records: Records) -> Reply[bool]:
    """Whether what `n`'s send was decided on has changed since its batch read it, queued
    on `batch` (the round trip of the last look): a record it read written anew (the
    client's number, channels, zone; the appointment), or, for an SMS to `sms_to`, that
    number opted out since. A batch sends for up to `deliverer.BATCH_SEND_S`; an update
    applied meanwhile must not be sent past, as the one-at-a-time path never did."""
    refs = records.read(record_refs(n))
    stored = store.records.queue_raw_records(batch, refs)
    opted_out = (store.opt_outs.queue_opted_out(batch, [sms_to]) if sms_to is not None
                 else Reply(dict))

    def changed() -> bool:
        now_stored = stored.get()
        return (any(records.raw(ref) != now_stored.get(ref) for ref in refs)
                or any(opted_out.get().values()))

    return Reply(changed)
