"""The service under test, as deployed: `notifier web`, `notifier clock` and worker
processes (each `notifier worker --processes P --threads T`) as real subprocesses, on a
private redis-server with its append-only file (`appendfsync always`), sending to the
outbox or to the stand-ins of `chaos/providers.py`, and its delivery webhooks to the
receiver of `chaos/webhooks.py`; and what it did, read afterwards from the outbox or the
stand-ins, the webhook receiver and outbox, and the ledger.

The load is `bench/workload.py`'s: signed `message.received` events over HTTP, three
notifications each, due at chosen instants.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from bench import common, workload
from bench.burst import fresh_dir, wait_applied
from chaos import webhooks
from chaos.providers import StandIns
from chaos.tally import Copy, Seen, Webhooks, tally_webhooks
from notifier.delivery.channels.outbox import Outbox
from notifier.ledger.embedded_redis import free_port
from notifier.ledger.notif_fields import logical
from notifier.ledger.shards import ledger_keys


@dataclass(frozen=True)
class Layout:
    """What runs: one worker command per (processes, threads); the lease; the stand-ins
    (None: the outbox); more settings."""

    workers: tuple[tuple[int, int], ...] = ((1, 2), (1, 2))
    lease_s: int = 2
    stand_ins: StandIns | None = None
    env: dict[str, str] = field(default_factory=dict)


@dataclass
class Service:
    server: common.RedisServer
    procs: common.Processes
    port: int
    secret: str
    work: Path
    layout: Layout
    #: the delivery-webhook endpoint's receiver
    receiver: webhooks.Receiver
    #: when a worker process was SIGKILLed (epoch seconds)
    kills: list[float] = field(default_factory=list)
    #: what `plan` planned: each notification's due time by id
    due: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._tail = workload.OutboxTail(self.work / "outbox" / "messages.jsonl")

    def wait_sent(self, lines: int, until: float) -> int:
        """Wait until the outbox has at least `lines` lines, or until `until` (epoch
        seconds); returns how many it has."""
        while (count := self._tail.count()) < lines and time.time() < until:
            time.sleep(0.005)
        return count

    @property
    def worker_names(self) -> list[str]:
        return [n for n in self.procs.names if n.startswith("worker")]

    def alive(self) -> None:
        """Raises `RuntimeError` when a process exited that the experiment did not stop."""
        self.procs.check_alive()

    def working_pids(self, name: str) -> list[int]:
        """The processes of worker command `name` that run actors: itself with
        `--processes 1`, else the ones it forked but the webhook dispatcher's (forked
        last: `notifier.worker.processes.run_processes`)."""
        pid = self.procs.of(name).pid
        forked = sorted(common.children().get(pid, []), key=_started)
        return forked[:-1] or [pid]

    def kill_worker(self, name: str, pid: int | None = None) -> None:
        """SIGKILL one working process of `name` (default its first), and restart the
        command once it exited, as a supervisor would (a worker whose forked process dies
        stops its others and exits 1)."""
        target = pid or self.working_pids(name)[0]
        self.kills.append(time.time())
        os.kill(target, signal.SIGKILL)
        proc = self.procs.of(name)
        proc.wait(timeout=60)
        self.procs.restart(name)

    def post_people(self, due: datetime, tag: str) -> None:
        """The clients and providers the messages name, applied. Raises `RuntimeError`
        when one is refused."""
        zone = workload.midday_zone(due)
        _, _, refused = workload.post(self.port, workload.sign_all(
            self.secret, workload.people_events(due, zone, tag)))
        if refused:
            raise RuntimeError(f"{refused} people events refused (see the web log)")
        wait_applied(self.server.client(0), self.alive)

    def plan(self, dues: Sequence[datetime], tag: str) -> dict[str, float]:
        """Post the people and a message escalating at each of `dues`, wait until applied;
        returns each notification's due time (epoch seconds) by id."""
        self.post_people(min(dues), tag)
        _, _, refused = workload.post(self.port, workload.sign_all(
            self.secret, workload.message_events(dues, tag)))
        if refused:
            raise RuntimeError(f"{refused} events refused (see the web log)")
        wait_applied(self.server.client(0), self.alive)
        self.due |= due_times(dues, tag)
        return due_times(dues, tag)

    def quiet(self, ids: Sequence[str]) -> bool:
        """Nothing in flight, nothing due, no event waiting to be applied, and none of
        `ids` scheduled (a retry backing off is not done)."""
        r = self.server.client(0)
        try:
            keys = ledger_keys(r)
            with r.pipeline(transaction=False) as pipe:
                for shard in keys.all():
                    pipe.zcard(keys.inflight(shard))
                    pipe.zcount(keys.schedule(shard), "-inf", time.time())
                    pipe.zcard(keys.events_pending(shard))
                for shard, group in keys.by_shard(ids).items():
                    pipe.zmscore(keys.schedule(shard), group)
                replies = pipe.execute()
            counts, scores = replies[:3 * keys.count], replies[3 * keys.count:]
            return not any(counts) and not any(s for group in scores for s in group)
        finally:
            r.close()

    def settle(self, due: dict[str, float], timeout_s: float = 300.0) -> None:
        """Wait until every notification of `due` is due, and then the service is quiet
        (`quiet(due)`) twice in a row half a second apart (a resumed worker's late send
        shows). Raises `RuntimeError` after `timeout_s` or when a process exited."""
        deadline = time.monotonic() + timeout_s
        while time.time() < max(due.values(), default=0):
            time.sleep(0.1)
        calm = 0
        while calm < 2:
            self.alive()
            if time.monotonic() > deadline:
                raise RuntimeError(f"not quiet after {timeout_s:.0f} s")
            calm = calm + 1 if self.quiet(list(due)) else 0
            time.sleep(0.5)

    def seen(self, extra_ids: Sequence[str] = ()) -> dict[str, Seen]:
        """What became of every notification that left (outbox or stand-ins) and of
        `extra_ids`: its copies, its ledger state and second sends, whether a stand-in
        refused it permanently."""
        copies: dict[str, list[Copy]] = {}
        refused: set[str] = set()
        fakes = self.layout.stand_ins
        if fakes is None:
            for line in Outbox(self.work / "outbox").messages():
                at = datetime.fromisoformat(str(line["sent_at"])).timestamp()
                written = copies.setdefault(str(line["id"]), [])
                written.append(Copy(at, late_write=any(c.at > at for c in written)))
        else:
            for request in fakes.requests:
                if request.accepted:
                    copies.setdefault(request.notification_id, []).append(
                        Copy(request.at, answer_lost=request.fate == "timeout"))
                elif request.fate == "permanent":
                    refused.add(request.notification_id)
        ids = sorted(set(copies) | refused | set(extra_ids))
        ledger = self.ledger(ids)
        return {i: Seen(tuple(copies.get(i, [])), ledger[i].get("state", "unknown"),
                        int(ledger[i].get("sent_again", 0)), i in refused,
                        int(ledger[i].get("attempts", 0)), ledger[i].get("reason", ""))
                for i in ids}

    def webhooks(self, ids: Sequence[str]) -> tuple[Webhooks, bool, str]:
        """Once the endpoint has nothing pending (`webhooks.drain`, with its deadline),
        what became of the webhooks (`tally_webhooks`) about the notifications `ids` and
        every message the outbox made; whether it drained, and a note saying how long
        that took or what was left."""
        r = self.server.client(0)
        try:
            outbox = webhooks.outbox_for(r, self.receiver, self.work)
            drained, note = webhooks.drain(outbox)
            made = webhooks.made(outbox)
        finally:
            r.close()
        return (tally_webhooks(self.ledger(ids), made, self.receiver.received()), drained,
                note)

    def ledger(self, ids: Sequence[str]) -> dict[str, dict[str, str]]:
        """Each notification's hash as `Reading.notification` decodes it, in one round
        trip."""
        r = self.server.client(0)
        try:
            keys = ledger_keys(r)
            pipe = r.pipeline(transaction=False)
            for i in ids:
                pipe.hgetall(keys.notif(i))
            raws = pipe.execute()
        finally:
            r.close()
        return {i: logical(i, {k.decode(): v.decode() for k, v in raw.items()})
                for i, raw in zip(ids, raws, strict=True)}


def _started(pid: int) -> tuple[int, int]:
    """When process `pid` started (clock ticks since boot, `/proc/PID/stat` field 22),
    then its pid: the order processes were forked in."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return (0, pid)
    return (int(stat.rsplit(")", 1)[1].split()[19]), pid)


def due_times(dues: Sequence[datetime], tag: str) -> dict[str, float]:
    """Each notification `workload.message_events(dues, tag)` plans, by id: its due time."""
    return {f"{kind}:{workload.message_id(tag, i)}:message-window:{channel}": due.timestamp()
            for i, due in enumerate(dues) for kind, channel, _ in workload.PER_MESSAGE}


def spread(start: datetime, messages: int, seconds: float) -> list[datetime]:
    """`messages` instants evenly from `start` over `seconds`."""
    return [start + timedelta(seconds=seconds * i / messages) for i in range(messages)]


@contextmanager
def running(layout: Layout, base: Path, name: str) -> Iterator[Service]:
    """A fresh Redis and the service's processes in `base/name`, up and answering; all
    stopped afterwards (logs stay in `base/name/logs`)."""
    work = fresh_dir(base, name)
    secret = workload.new_secret()
    with common.redis_server("always") as server, webhooks.Receiver() as receiver:
        extra = {"NOTIFIER_LEASE_S": str(layout.lease_s), "NOTIFIER_SMS_RATE_PER_S": "10000",
                 "NOTIFIER_RETRY_BASE_S": "1", **receiver.env(), **layout.env}
        port = free_port()
        if layout.stand_ins is not None:
            # the Twilio stand-in posts its status callbacks to this web
            extra |= layout.stand_ins.env() | {"NOTIFIER_PUBLIC_URL": f"http://127.0.0.1:{port}"}
        env = common.python_env(common.product_env(server.url_for(0), work / "outbox", secret,
                                                   work / "var", **extra))
        commands = [(f"worker-{i + 1}", common.notifier_argv(
            "worker", "--processes", str(p), "--threads", str(t)))
            for i, (p, t) in enumerate(layout.workers)]
        commands += [("clock", common.notifier_argv("clock")),
                     ("web", common.notifier_argv("web", "--host", "127.0.0.1",
                                                  "--port", str(port)))]
        with common.processes(commands, env, work, work / "logs") as procs:
            common.wait_for_http(port, alive=procs)
            yield Service(server, procs, port, secret, work, layout, receiver)
