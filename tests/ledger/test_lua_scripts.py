"""The ledger's Lua scripts: every key a script touches is passed in KEYS (what Redis
Cluster needs), each `.lua` file documents its KEYS and ARGV, and the callers that must
read keys out of Redis first (cancel, reschedule) stay correct when a write slips in
between the read and the script."""

from __future__ import annotations

import hashlib
import re
import time
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from typing import Any

import pytest
import redis
from pydantic import SecretStr

from notifier.ledger.broker_messages import broker_message
from notifier.ledger.client import script_body
from notifier.ledger.lua import INCLUDE, lua_source
from notifier.ledger.notifications import epoch
from notifier.ledger.plans import PlanWriter
from notifier.ledger.ratelimit import RateLimiter
from notifier.ledger.shard_leases import ShardLeases
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification
from notifier.webhooks.catalogue import expand
from notifier.webhooks.endpoints import Endpoint
from notifier.webhooks.outbox import WebhookOutbox
from tests.ledger_keys import KEYS, due_score, notif_key, recipient_key, scheduled_count

#: c1's recipient index in the shard of a1, which the notifications here are about.
C1_INDEX = recipient_key("appointment_reminder:a1:1:sms", "client", "c1")

NOW = datetime(2026, 11, 25, 15, 0, tzinfo=UTC)


def planned(i: int, due: datetime = NOW, entity: str = "appointment:a1",
            recipient_id: str = "c1") -> PlannedNotification:
    return PlannedNotification(
        id=f"appointment_reminder:a1:{i}:sms", kind="appointment_reminder", channel="sms",
        recipient="client", recipient_id=recipient_id, entity=entity, due_at=due,
        expires_at=due + timedelta(hours=1),
    )


@pytest.fixture
def store(redis_client):
    return Store(redis_client)


SCRIPTS = sorted(p.name for p in files("notifier.ledger.lua").iterdir()
                 if p.name.endswith(".lua") and not p.name.startswith("_"))
#: The shared parts scripts include (`-- #include _name`), and the names their functions
#: take keys by: each caller passes its own KEYS entries (checked below).
PARTS = {"_webhook_emit.lua": ("outbox", "seq", "notif"), "_audit.lua": ("stream",)}
#: `-- KEYS[1]  ...` or `-- ARGV[3..]  ...` in a file's header.
DOCUMENTED = re.compile(r"^--\s+(KEYS|ARGV)\[(\d+)(\.\.)?\]", re.M)


def header_and_code(name: str) -> tuple[str, str]:
    lines = lua_source(name.removesuffix(".lua")).splitlines()
    n = next(i for i, line in enumerate(lines) if not line.startswith("--"))
    return "\n".join(lines[:n]), "\n".join(lines[n:])


# What each file says, checked statically ----------------------------------------------
def test_there_are_scripts_and_no_lua_left_in_python():
    assert len(SCRIPTS) >= 14
    package = Path(__file__).resolve().parents[2] / "notifier"
    assert [str(p) for p in package.rglob("*.py") if "redis.call(" in p.read_text()] == []


def test_the_scripts_run_are_the_files_as_they_are():
    """No text is filled into a script before it runs: each constant is a file's text."""
    from notifier.ledger import (
        announcements,
        events,
        notifications,
        optouts,
        ratelimit,
        reports,
        shard_leases,
        trimming,
        turns,
    )
    from notifier.webhooks import outbox

    sources = {lua_source(name.removesuffix(".lua")) for name in SCRIPTS}
    constants = {f"{m.__name__}.{k}": getattr(m, k)
                 for m in (announcements, events, notifications, optouts, ratelimit, reports,
                           shard_leases, trimming, turns, outbox)
                 for k in dir(m)
                 if k.endswith("_LUA")}
    assert len(constants) == len(SCRIPTS)
    assert {k: v in sources for k, v in constants.items()} == dict.fromkeys(constants, True)


@pytest.mark.parametrize("name", SCRIPTS)
def test_each_script_documents_its_keys_argv_and_return_at_the_top(name):
    header, code = header_and_code(name)
    assert "Returns" in header, f"{name}: say what it returns"
    documented: dict[str, set[int]] = {"KEYS": set(), "ARGV": set()}
    ranges: dict[str, int | None] = {"KEYS": None, "ARGV": None}
    for table, index, open_ended in DOCUMENTED.findall(header):
        if open_ended:
            ranges[table] = int(index)
        else:
            documented[table].add(int(index))
    assert documented["KEYS"] or ranges["KEYS"], f"{name}: document KEYS"
    for table, index in re.findall(r"\b(KEYS|ARGV)\[(\d+)\]", code):
        start = ranges[table]
        assert int(index) in documented[table] or (start is not None and int(index) >= start), \
            f"{name}: {table}[{index}] is used but not documented"
    for index in re.findall(r"unpack\(ARGV, (\d+)\)", code):
        assert ranges["ARGV"] == int(index), f"{name}: document ARGV[{index}..]"
    for table in re.findall(r"\b(KEYS|ARGV)\[[a-z_]", code):
        assert ranges[table] is not None, f"{name}: {table} indexed by a variable: document " \
            f"{table}[n..]"


def part_text(part: str) -> str:
    return lua_source(part.removesuffix(".lua"))


#: The commands a script may call that take no key (Redis's clock: replicated as the
#: effects of the script since Redis 5, so the same on a replica).
KEYLESS = {"'TIME'"}
#: The functions of the parts, and how many of their first arguments are keys.
KEY_ARGUMENTS = {"emit": 2, "emit_notification": 3, "audit": 1}


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_script_gives_the_parts_it_includes_keys_from_its_keys(name):
    """The shared part takes keys as arguments; each call passes a KEYS entry for each."""
    own = lua_source(name.removesuffix(".lua"))
    for part in PARTS:
        own = own.replace(part_text(part), "")
    for function, args in re.findall(r"\b(emit|emit_notification|audit)\(([^()]*)\)", own):
        keys = [a.strip() for a in args.split(",")][:KEY_ARGUMENTS[function]]
        assert all(re.fullmatch(r"KEYS\[(\w+|#KEYS)\]", k) for k in keys), \
            f"{name}: {function}({args})"


def test_the_parts_are_included_verbatim_where_a_script_says():
    part = part_text("_webhook_emit.lua")
    including = [n for n in SCRIPTS if part in lua_source(n.removesuffix(".lua"))]
    assert {n for n in SCRIPTS if part_text("_audit.lua") in lua_source(n.removesuffix(".lua"))
            } == {"notif_add.lua", "notif_cancel.lua", "optout_set.lua"}
    assert set(including) == {"notif_add.lua", "notif_begin.lua", "notif_cancel.lua",
                              "notif_cancel_entity.lua", "notif_delivery.lua",
                              "notif_finish.lua", "notif_reschedule.lua", "optout_set.lua",
                              "webhook_emit.lua"}
    assert not any(INCLUDE.search(lua_source(n.removesuffix(".lua"))) for n in SCRIPTS)


@pytest.mark.parametrize("name", SCRIPTS)
def test_no_script_builds_a_key(name):
    """Every redis.call names its key as KEYS[...] exactly: nothing concatenated from ARGV
    or from a value read in Redis, and no text is filled into a script before it runs."""
    _, code = header_and_code(name)
    calls = re.findall(r"redis\.p?call\(\s*([^,)]*)\s*,?\s*([^,)]*)", code)
    assert calls, name
    whole = lua_source(name.removesuffix(".lua"))
    passed = {param for part, params in PARTS.items() if part_text(part) in whole
              for param in params}
    for command, first in calls:
        assert re.fullmatch(r"'[A-Z]+'", command), f"{name}: command {command} not a literal"
        if command in KEYLESS:
            continue
        assert re.fullmatch(r"KEYS\[\w+\]", first.strip()) or first.strip() in passed, \
            f"{name}: {command} {first} is not a key from KEYS"


# Reading first, then cancelling ----------------------------------------------------------
def test_cancel_reads_the_entitys_ids_first_and_cancels_each(store):
    store.write_plan(Plan(outcome="applied", add=(planned(1), planned(2))), NOW)
    store.write_plan(Plan(outcome="applied", cancel=("appointment:a1",)), NOW)
    assert store.notification("appointment_reminder:a1:1:sms")["state"] == "cancelled"
    assert store.notification("appointment_reminder:a1:2:sms")["state"] == "cancelled"
    assert scheduled_count(store.redis) == 0


def test_an_id_added_between_reading_and_cancelling_is_cancelled_too(store, monkeypatch):
    """The entity's index is WATCHed before it is read: a notification added before the
    transaction commits fails it, and the retry reads the index again."""
    store.write_plan(Plan(outcome="applied", add=(planned(1),)), NOW)
    other = Store(store.redis)
    reads: list[dict[str, list[str]]] = []
    real = PlanWriter.write_targets

    def racing(self: PlanWriter, plan: Plan, pipe: Any, known: Any = None) -> Any:
        before, targets = real(self, plan, pipe, known)
        if not plan.cancel:
            return before, targets
        reads.append(targets)
        if len(reads) == 1:  # another writer adds to the entity right after the read
            other.write_plan(Plan(outcome="applied", add=(planned(2),)), NOW)
        return before, targets

    monkeypatch.setattr(PlanWriter, "write_targets", racing)
    store.write_plan(Plan(outcome="applied", cancel=("appointment:a1",)), NOW)
    assert reads == [{"appointment:a1": ["appointment_reminder:a1:1:sms"]},
                     {"appointment:a1": ["appointment_reminder:a1:1:sms",
                                         "appointment_reminder:a1:2:sms"]}]
    assert store.notification("appointment_reminder:a1:2:sms")["state"] == "cancelled"
    assert scheduled_count(store.redis) == 0


def test_the_cancel_script_leaves_an_id_no_longer_in_the_entitys_index_alone(store):
    store.write_plan(Plan(outcome="applied", add=(planned(1), planned(2, entity="other:a1"))), NOW)
    with store.redis.pipeline() as pipe:
        store.schedule.cancel_entity(pipe, "appointment:a1", ["appointment_reminder:a1:1:sms",
                                                              "appointment_reminder:a1:2:sms"])
        assert pipe.execute() == [1]
    assert store.notification("appointment_reminder:a1:2:sms")["state"] == "scheduled"


def test_a_plan_that_cancels_without_its_targets_is_refused(store):
    from notifier.errors import StoreError

    with store.redis.pipeline() as pipe, pytest.raises(StoreError):
        store.plans._write_plan(pipe, Plan(outcome="applied", cancel=("appointment:a1",)), NOW)


# Reading first, then rescheduling -------------------------------------------------------
def sending(store: Store, i: int = 1) -> tuple[str, str]:
    """A notification begun: its id and its lease's token."""
    store.write_plan(Plan(outcome="applied", add=(planned(i),)), NOW)
    nid = f"appointment_reminder:a1:{i}:sms"
    begun = store.schedule.begin(nid, NOW, lease_s=60)
    assert begun.may_send
    return nid, begun.lease


def test_reschedule_moves_the_notification_in_the_index_its_recipient_names(store):
    nid, lease = sending(store)
    later = NOW + timedelta(hours=1)
    assert store.schedule.reschedule(nid, later, "quiet hours", lease=lease,
                                     recipient=("client", "c1")) == "rescheduled"
    assert store.redis.zscore(C1_INDEX, nid) == later.timestamp()
    assert due_score(store.redis, nid) == later.timestamp()


def test_reschedule_given_a_recipient_that_no_longer_matches_reads_it_again(store):
    """The script checks `to`/`to_id` against the index key it was given: a mismatch
    changes nothing, and the caller reads the recipient and tries again."""
    nid, lease = sending(store)
    later = NOW + timedelta(hours=1)
    assert store.schedule.reschedule(nid, later, "quiet hours", lease=lease,
                                     recipient=("client", "someone-else")) == "rescheduled"
    assert store.redis.zscore(C1_INDEX, nid) == later.timestamp()
    assert not store.redis.exists(*KEYS.recipient_indexes("client", "someone-else"))


def test_reschedule_of_an_unknown_notification_changes_nothing(store):
    assert store.schedule.reschedule("nope", NOW, "quiet hours", lease="1") == ""
    assert store.redis.dbsize() == 0


# What each script touches, checked against a real Redis -------------------------------
#: One argument of a MONITOR line: Redis quotes each and escapes \\ " \n \r \t \a \b \xHH.
MONITOR_ARG = re.compile(r'"((?:[^"\\]|\\.)*)"')
MONITOR_LINE = re.compile(r"^[\d.]+ \[\d+ (\S*)\] (.*)$")


def monitor_args(text: str) -> list[str]:
    return [a.encode("latin-1", "backslashreplace").decode("unicode_escape")
            for a in MONITOR_ARG.findall(text)]


class Monitor:
    """The commands Redis ran while the block ran, as (source, args): source `lua` for a
    command a script ran, else the client's address."""

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self.lines: list[tuple[str, list[str]]] = []

    def __enter__(self) -> Monitor:
        self.monitor = self.client.monitor().__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        redis.Redis(connection_pool=self.client.connection_pool).echo("monitor-end")
        while True:
            raw = self.monitor.connection.read_response()
            line = raw.decode("latin-1") if isinstance(raw, bytes) else raw
            match = MONITOR_LINE.match(line)
            assert match, line
            args = monitor_args(match.group(2))
            if args == ["ECHO", "monitor-end"]:
                break
            self.lines.append((match.group(1), args))
        self.monitor.__exit__(None, None, None)
        self.client.close()


def every_script_runs(store: Store) -> None:
    """Each script, along its branches that touch keys: events, turns, notifications
    from add to finish, cancel and reschedule (both ways), delivery reports and the
    repair job's claim of a send awaiting one, pacing."""
    store.store_event("e1", b'{"a": "b c"}', NOW)
    store.store_event("e2", b"{}", NOW, subject="appointment:a1", occurred_at=NOW)
    store.events.store_event("e3", b"{}", NOW, subject="appointment:a9", occurred_at=NOW,
                             message=broker_message("notifier-dq", "events", "apply_event",
                                                    "e3"))
    turns = store.turns
    assert turns.take("appointment:a1", "t1", NOW, lease_s=30)
    assert turns.next("appointment:a1", "t1", NOW, lease_s=30) == "e2"
    turns.release("appointment:a1", "t1")
    assert turns.take("appointment:b2", "t2", NOW, lease_s=0.001)
    time.sleep(0.01)
    assert turns.take("appointment:c3", "t3", NOW, lease_s=30)
    assert sorted(turns.expired(NOW + timedelta(minutes=5))) == ["appointment:b2"]
    turns.redis.zadd(turns.keys.turns(turns.keys.of_ref("appointment:c3")),
                     {"appointment:c3": epoch(NOW)})
    assert turns.expired(NOW + timedelta(minutes=5)) == []  # its key still holds
    assert not turns.next("appointment:c3", "t3", NOW, lease_s=30)  # queue empty: given back

    schedule = store.schedule
    store.write_plan(Plan(outcome="applied", add=(
        planned(1), planned(2), planned(3), planned(4, entity="other:a1", recipient_id="c2"),
        PlannedNotification(id="appointment_reminder:a1:expired:sms",
                            kind="appointment_reminder", channel="sms", recipient="client",
                            recipient_id="c1", entity="appointment:a1",
                            due_at=NOW, expires_at=NOW, state="expired"))), NOW)
    assert len(schedule.claim(NOW, 10, lease_s=1)) == 4
    assert len(schedule.sweep(NOW + timedelta(minutes=1))) == 4
    leases = {}
    for i in (1, 2, 3, 4):
        begun = schedule.begin(f"appointment_reminder:a1:{i}:sms", NOW, lease_s=60)
        assert begun.may_send
        leases[i] = begun.lease
    assert schedule.begin("missing-one", NOW, lease_s=60).verdict == "missing"
    assert schedule.finish("appointment_reminder:a1:1:sms", "sent", lease=leases[1],
                           report_at=epoch(NOW), sent_at=epoch(NOW) + 3)
    # A send after a lost lease: recorded as a second send.
    assert schedule.finish("appointment_reminder:a1:1:sms", "sent", lease="0",
                           sent_at=epoch(NOW) + 4) == "sent_again"
    # The repair job claims the send awaiting its report; a final report settles it.
    assert store.reports.claim(NOW, 10, claim_s=60) == ["appointment_reminder:a1:1:sms"]
    assert schedule.record_delivery("appointment_reminder:a1:1:sms", "delivered", "", NOW)
    assert schedule.reschedule("appointment_reminder:a1:2:sms", NOW + timedelta(hours=1),
                               "quiet hours", lease=leases[2], slot=1.5) == "rescheduled"
    # The console's cancel of one notification (scheduled again just above).
    assert schedule.cancel_one("appointment_reminder:a1:2:sms", "by hand") is True
    # Once only: a second cancel of it (a double submit) cancels nothing.
    assert schedule.cancel_one("appointment_reminder:a1:2:sms", "by hand") is False
    assert schedule.cancel_one("no-such-one", "by hand") is False
    store.write_plan(Plan(outcome="applied", cancel=("appointment:a1",)), NOW)
    assert schedule.reschedule("appointment_reminder:a1:3:sms", NOW, "retrying",
                               lease=leases[3]) == "cancelled"
    assert schedule.reschedule("appointment_reminder:a1:4:sms", NOW, "paced", lease=leases[4],
                               not_an_attempt=True,
                               recipient=("client", "stale")) == "rescheduled"
    limiter = RateLimiter(store.redis, "twilio", per_s=10)
    limiter.reserve(NOW)
    limiter.reserve(NOW)
    # its index entry is trimmed
    store.redis.delete(notif_key("appointment_reminder:a1:expired:sms"))
    assert store.trimmer.run(NOW).removed >= 1
    # Opt-outs and rejected events, announced; the webhook outbox fanned out, a message
    # claimed and its attempt recorded.
    assert store.set_sms_opt_out("+15005550006", True)
    store.reject_event("e1", "no longer validates", NOW)
    endpoint = Endpoint(name="ehr", url="http://127.0.0.1:9/", events=expand(["*"]),
                        secret=SecretStr("whsec_" + "A" * 32))
    webhooks = WebhookOutbox(store.redis, [endpoint], store.keys)
    assert webhooks.fan_out(NOW)
    claimed = webhooks.claim(endpoint, NOW, lease_s=30)
    assert webhooks.finish(endpoint, claimed[0].id, "delivered", NOW) == 1
    # A clock's shard leases: taken, kept, given up.
    leases = ShardLeases(store.redis, store.keys)
    assert leases.renew() == list(store.keys.all())
    assert leases.renew() == list(store.keys.all())
    leases.release_all()


def test_every_script_touches_only_the_keys_in_its_keys(redis_url, store):
    """Run every script with MONITOR on, and ask Redis (COMMAND GETKEYS) which keys each
    command a script ran touched: all must be among the KEYS the script was called with,
    as Redis Cluster requires. Redis 6 shows a script's commands after its EVALSHA;
    Redis 7 before it."""
    with Monitor(redis_url) as monitor:
        every_script_runs(store)
    version = int(store.redis.info("server")["redis_version"].split(".")[0])
    lines = monitor.lines if version < 7 else list(reversed(monitor.lines))
    shas = {hashlib.sha1(lua_source(n.removesuffix(".lua")).encode()).hexdigest(): n
            for n in SCRIPTS}
    bodies = {script_body(lua_source(n.removesuffix(".lua"))): n for n in SCRIPTS}
    script: tuple[str, set[str]] | None = None
    touched: dict[str, set[str]] = {}
    strays: list[tuple[str, str, str]] = []
    for source, args in lines:
        if source != "lua":
            if args[0].upper() in ("EVALSHA", "EVAL"):
                # A transaction or pipeline sends a script's source (`script_body`).
                name = (shas.get(args[1], args[1]) if args[0].upper() == "EVALSHA"
                        else bodies.get(args[1], "eval"))
                script = (name, set(args[3:3 + int(args[2])]))
            else:
                script = None
            continue
        assert script is not None, f"a script's command with no script: {args}"
        name, keys = script
        for key in store.redis.command_getkeys(*args) if len(args) > 1 else []:
            key = key.decode() if isinstance(key, bytes) else key
            touched.setdefault(name, set()).add(key)
            if key not in keys:
                strays.append((name, args[0], key))
    assert strays == []
    assert sorted(touched) == SCRIPTS  # every script ran and touched keys
