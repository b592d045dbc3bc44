"""The notification scripts on the real 3-master cluster (issue 17, step 6): every key a
notification script is given is in its notification's shard, the webhook outbox and its
sequence included, so the whole flow runs on the cluster: plans for entities of different
shards, the clock's claim, begin, a send finished, a delivery report, a cancel, a
reschedule, the repair job's claim, the trimmer, the figures, a client's listing, an
audited console cancel. The cluster client refuses a call whose keys span slots
(`CrossSlot`, before anything is sent), which fails the test.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
import redis
from redis.cluster import RedisCluster

from notifier.console.audit import AUDIT_STREAM, AuditLog
from notifier.ledger.cluster.server import LocalCluster
from notifier.ledger.store import Store
from notifier.policy.plan import Plan, PlannedNotification

#: A few shards, so the entities below spread over them and over the masters.
SHARDS = 6
NOW = datetime.now(UTC).replace(microsecond=0)


def entities(count: int) -> list[str]:
    """`count` appointment ids, each in a shard of its own."""
    found: dict[int, str] = {}
    keys = Store(redis.Redis(), shards=SHARDS).keys  # no call is made: the keys only
    for i in range(1000):
        found.setdefault(keys.of_ref(f"appointment:apt{i}"), f"apt{i}")
        if len(found) == count:
            return list(found.values())
    raise AssertionError("not enough shards found")


APPOINTMENTS = entities(4)


def planned(appointment: str, channel: str, due: datetime,
            client: str = "c1") -> PlannedNotification:
    return PlannedNotification(
        id=f"appointment_reminder:{appointment}:r1:{channel}", kind="appointment_reminder",
        channel=channel, recipient="client", recipient_id=client,
        entity=f"appointment:{appointment}", due_at=due, expires_at=due + timedelta(days=1))


@pytest.fixture
def store(cluster: LocalCluster, cluster_client: RedisCluster) -> Store:
    for index in range(len(cluster.nodes)):
        with redis.Redis.from_url(cluster.nodes[index].url) as node:
            node.flushall()
    return Store(cluster_client, keep_finished_s=30 * 86400, shards=SHARDS)


@pytest.fixture(params=["one Redis", "cluster"])
def flow_store(request: pytest.FixtureRequest) -> Store:
    """The store on one Redis, then on the cluster: the same flow passes on both."""
    if request.param == "cluster":
        return request.getfixturevalue("store")
    return Store(request.getfixturevalue("redis_client"), keep_finished_s=30 * 86400,
                 shards=SHARDS)


def test_the_notification_flow_runs_on_the_cluster_shard_by_shard(flow_store: Store):
    store = flow_store
    first, second, third, fourth = APPOINTMENTS
    plans_ = {a: (planned(a, "sms", NOW - timedelta(minutes=i)),
                  planned(a, "email", NOW + timedelta(days=2, minutes=i)))
              for i, a in enumerate(APPOINTMENTS)}
    shards = {store.keys.of_ref(f"appointment:{a}") for a in APPOINTMENTS}
    assert len(shards) == len(APPOINTMENTS)
    for adds in plans_.values():
        assert store.write_plan(Plan(outcome="applied", add=adds), NOW) == 2

    # The clock claims every shard's due; each is begun in its own shard.
    due = sorted(adds[0].id for adds in plans_.values())
    assert sorted(store.schedule.claim(NOW, 100, lease_s=60)) == due
    leases = {}
    for nid in due:
        begun = store.schedule.begin(nid, NOW, lease_s=60)
        assert begun.may_send, nid
        leases[nid] = begun.lease

    sent, rescheduled = plans_[first][0].id, plans_[second][0].id
    assert store.schedule.finish(sent, "sent", lease=leases[sent],
                                 report_at=NOW.timestamp() - 1,
                                 sent_at=NOW.timestamp() + 2, receipt="SM1")
    assert store.schedule.record_delivery(sent, "failed", "30003", NOW) == "failed"
    assert store.schedule.reschedule(rescheduled, NOW + timedelta(hours=3), "quiet hours",
                                     lease=leases[rescheduled]) == "rescheduled"
    failed = plans_[fourth][0].id
    assert store.schedule.finish(failed, "sent", lease=leases[failed],
                                 report_at=NOW.timestamp() - 1,
                                 sent_at=NOW.timestamp() + 1, receipt="SM4")
    # The repair job claims per shard; the reported one left its shard's index.
    assert store.reports.claim(NOW, 10, claim_s=60) == [failed]
    assert store.reports.figures(NOW).awaiting == 1

    cancelled = plans_[third][1].id
    assert store.schedule.cancel_one(cancelled, "by hand")

    # An operator's cancel, audited in the stream of the notification's shard.
    audited = plans_[fourth][1].id
    audit = AuditLog(store.redis, keep_days=30, keys=store.keys)
    assert store.schedule.cancel_one(audited, "by an operator",
                                     audit.entry("ana", "cancel", audited, NOW))
    audit.record("ana", "view", "client:c1", NOW + timedelta(seconds=1))
    assert [(e.action, e.subject) for e in audit.recent()] == [
        ("view", "client:c1"), ("cancel", audited)]
    assert store.redis.xlen(store.keys.audit(store.keys.of_notification(audited))) == 1
    assert store.redis.xlen(AUDIT_STREAM) == 1

    figures = store.figures()
    assert figures.outcomes == {("sent", "sms"): 2, ("cancelled", "email"): 2}
    assert figures.lateness[("appointment_reminder", "sms")].count == 2
    # two emails and the rescheduled one; the third's SMS is still being sent
    assert (figures.scheduled, figures.in_flight) == (3, 1)

    # A client's listing: every shard's index merged, by due time.
    rows = store.notifications_for("client", "c1")
    expected = sorted((n for adds in plans_.values() for n in adds),
                      key=lambda n: (n.due_at, n.id))
    due_of = {rescheduled: NOW + timedelta(hours=3)}
    assert [r.id for r in rows] == [n.id for n in sorted(
        expected, key=lambda n: (due_of.get(n.id, n.due_at).timestamp(), n.id))]
    assert {r.id: r.state for r in rows}[sent] == "failed"

    # The trimmer walks every master's indexes; a retired notification leaves its own.
    later = NOW + timedelta(days=40)
    run = store.trimmer.run(later, pages=100)
    # due before the retention's start and ended: the two sent, the two cancelled
    assert run.cursor == 0 and run.retired == 4, run


def test_the_trimmers_scan_pages_through_every_master_and_ends(store: Store, monkeypatch):
    """On a cluster the trimmer SCANs one master after the other, its cursor saying which
    and where (`trimming.scan_page`): small pages, one a run, see every index once and
    come back to 0."""
    from notifier.ledger import trimming

    for a in entities(SHARDS):
        n = planned(a, "sms", NOW + timedelta(days=1), client=f"client-{a}")
        store.write_plan(Plan(outcome="applied", add=(n,)), NOW)
    indexes = set()
    for node in store.redis.get_primaries():
        indexes |= {k for k in store.redis.scan_iter(match="n:*by-*", target_nodes=node)}
    assert len(indexes) == 2 * SHARDS  # an entity's and a recipient's, per appointment
    monkeypatch.setattr(trimming, "SCAN_PAGE", 1)
    cursor, seen, runs = 0, 0, 0
    while True:
        run = store.trimmer.run(NOW, cursor, pages=1)
        cursor, seen, runs = run.cursor, seen + run.indexes, runs + 1
        if cursor == 0:
            break
        assert runs < 200
    assert seen == len(indexes) and runs > 3
