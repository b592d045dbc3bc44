"""The experiments: each a function of (seed, quick, base directory) returning its row.

Every experiment starts a fresh Redis and the service's processes (`chaos/service.py`),
puts load on it, disturbs it (the seed decides when and whom), waits until it is quiet
and its delivery-webhook endpoint has nothing pending, and tallies what left against what
was due, and the webhooks received against the ledger (`chaos/tally.py`). Sizes are
(quick, full).
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from bench import common, workload
from bench.burst import wait_applied
from chaos.clients import Hostile, Ingested, hostile, ingest
from chaos.providers import stand_ins
from chaos.service import Layout, Service, due_times, running, spread
from chaos.tally import Row, Webhooks, tally
from notifier.delivery.fallback import other_channel

#: Events posted and applied per second when planning, a low guess for a busy 2-core
#: machine (the first burst is set that far ahead; one planned late goes out as applied).
PLAN_RATE = 150.0
#: The lease of the experiments on the outbox, seconds: short, so a dead worker's
#: notifications are taken over soon (the outbox needs no time for its call).
LEASE_S = 2
#: Seconds a SIGSTOPped worker stays stopped: past its lease, and the other worker's
#: takeover after the clock's sweep (`tests/end_to_end/test_worker_pause.py`).
PAUSE_S = 2.0 * LEASE_S + 1

Disturb = Callable[[Service, random.Random, list[float]], list[str]]


def _size(quick: bool, small: int, large: int) -> int:
    return small if quick else large


def _under_load(name: str, layout: Layout, seed: int, base: Path, bursts: int,
                per_burst: int, gap_s: float, disturb: Disturb, provider: bool = False,
                more_due: dict[str, float] | None = None) -> Row:
    """Plan `bursts` bursts of `per_burst` escalations (three notifications each) due
    `gap_s` apart, run `disturb(service, rng, burst times)` from the first on (burst
    times in epoch seconds; it returns notes, and may add to `more_due` what it planned
    itself), settle and tally. Bursts keep the workers busy when the fault strikes: a
    steady trickle leaves them idle most of the time, and a kill then hits nothing."""
    began = time.perf_counter()
    rng = random.Random(seed)
    tag = f"{name[:1]}{seed}"
    with running(layout, base, name) as svc:
        first = datetime.now(UTC) + timedelta(seconds=1 + bursts * per_burst / PLAN_RATE)
        at = [first + timedelta(seconds=gap_s * b) for b in range(bursts)]
        due = svc.plan([t for t in at for _ in range(per_burst)], tag)
        # The disturbance starts with the first burst, whatever the planning took.
        time.sleep(max(0.0, first.timestamp() - time.time()))
        notes = disturb(svc, rng, [t.timestamp() for t in at])
        due |= more_due or {}
        svc.settle(due)
        seen = svc.seen()
        if provider:
            due |= _fallbacks(svc, due, {i for i, s in seen.items() if s.refused})
            svc.settle(due)  # the other channel's messages may be retrying too
            seen = svc.seen(list(due))
        kills = list(svc.kills)
        hooks = svc.webhooks(list(due))
    row = tally(name, due, seen, provider=provider, kills=kills)
    row.notes += notes
    _with_webhooks(row, *hooks)
    row.wall_s = time.perf_counter() - began
    return row


def _with_webhooks(row: Row, hooks: Webhooks, drained: bool, note: str) -> Row:
    """`row` with what became of its webhooks (`Service.webhooks`); not drained by the
    deadline is a problem."""
    row.webhooks = hooks
    (row.notes if drained else row.problems).append(note)
    return row


def _strike(svc: Service, bursts: list[float], b: int, rng: random.Random) -> None:
    """Return at a random moment of burst `b` draining: once 10-50% of its notifications
    are in the outbox (at most 10 s after it fell due). A moment picked by the clock alone
    often falls after a small burst has drained, and the fault then hits nothing."""
    per_burst = len(svc.due) // len(bursts)
    svc.wait_sent(int((b + rng.uniform(0.1, 0.5)) * per_burst), bursts[b] + 10)


def _fallbacks(svc: Service, due: dict[str, float], refused: set[str]) -> dict[str, float]:
    """The notifications the other channel owes after a permanent failure of a client's
    message (`delivery/fallback.py`; the workload's clients accept both), with their due
    time from the ledger. One the ledger does not hold is owed all the same, due when its
    refused sibling was: never planned, it counts as lost (found by QA: a build that never
    planned the other channel passed when only the planned ones were expected)."""
    owed = {i.rsplit(":", 1)[0] + ":" + other_channel(i.rsplit(":", 1)[1]): i
            for i, f in svc.ledger(sorted(refused)).items() if f.get("to") == "client"}
    ledger = svc.ledger([s for s in owed if s not in due])
    return {s: float(f["due"]) if f.get("state") else due[owed[s]]
            for s, f in ledger.items()}


def worker_kills(seed: int, quick: bool, base: Path) -> Row:
    """(a) SIGKILL a worker process as each burst drains, alternately a single-process
    worker and a forked process of a two-process one (whose parent then stops and exits
    1); each restarted at once, as a supervisor does."""
    def disturb(svc: Service, rng: random.Random, bursts: list[float]) -> list[str]:
        for i in range(len(bursts)):
            _strike(svc, bursts, i, rng)
            name = svc.worker_names[i % 2]
            svc.kill_worker(name, rng.choice(svc.working_pids(name)))
        return [f"{len(bursts)} worker processes SIGKILLed"]

    layout = Layout(workers=((1, 2), (2, 2)))
    return _under_load("worker-kill", layout, seed, base, _size(quick, 3, 15),
                       _size(quick, 100, 200), 1.5, disturb)


def worker_pause(seed: int, quick: bool, base: Path) -> Row:
    """(b) SIGSTOP a worker process as a burst drains, for longer than its lease (the
    other worker takes its notifications over), then SIGCONT; alternately each worker,
    twice in quick mode (a pause can catch a worker between batches, holding nothing),
    four times in full."""
    def disturb(svc: Service, rng: random.Random, bursts: list[float]) -> list[str]:
        for i in range(len(bursts)):
            _strike(svc, bursts, i, rng)
            pid = svc.working_pids(svc.worker_names[i % 2])[0]
            os.kill(pid, signal.SIGSTOP)
            time.sleep(PAUSE_S)
            os.kill(pid, signal.SIGCONT)
        return [f"{len(bursts)} pauses of {PAUSE_S:.0f} s (lease {LEASE_S} s)"]

    return _under_load("worker-pause", Layout(), seed, base, _size(quick, 2, 4),
                       _size(quick, 120, 300), PAUSE_S + 1, disturb)


def clock_kills(seed: int, quick: bool, base: Path) -> Row:
    """(c) SIGKILL the clock as each burst drains; restarted after 0-1 s."""
    def disturb(svc: Service, rng: random.Random, bursts: list[float]) -> list[str]:
        for i in range(len(bursts)):
            _strike(svc, bursts, i, rng)
            clock = svc.procs.of("clock")
            clock.kill()
            clock.wait(timeout=10)
            time.sleep(rng.uniform(0, 1))
            svc.procs.restart("clock")
        return [f"clock SIGKILLed {len(bursts)} times"]

    return _under_load("clock-kill", Layout(), seed, base, _size(quick, 3, 15),
                       _size(quick, 100, 200), 1.5, disturb)


def redis_kills(seed: int, quick: bool, base: Path) -> Row:
    """(e) SIGKILL Redis (append-only file, `appendfsync always`) as a burst drains, while
    an integrator posts more events, and start it again 1 s later; once in quick mode,
    three times in full. The integrator retries what got a 503 or no answer."""
    extra: dict[str, float] = {}
    seen_by_client: list[Ingested] = []

    def disturb(svc: Service, rng: random.Random, bursts: list[float]) -> list[str]:
        messages = _size(quick, 50, 300)
        end = bursts[-1] + 2
        more = spread(datetime.fromtimestamp(end, UTC), messages, 1)
        extra.update(due_times(more, "late"))
        posting = threading.Thread(target=lambda: seen_by_client.append(ingest(
            svc.port, svc.secret, workload.message_events(more, "late"),
            pace_s=(end - time.time()) / messages)))
        posting.start()
        for i in range(len(bursts)):
            _strike(svc, bursts, i, rng)
            svc.server.kill()
            time.sleep(1.0)
            svc.server.start()
        posting.join()
        wait_applied(svc.server.client(0), svc.alive)
        got = seen_by_client[0]
        return [f"Redis SIGKILLed {len(bursts)} times; {len(got.acked)} of {messages} events "
                f"posted meanwhile acknowledged, {got.retried} tries refused or unanswered"]

    row = _under_load("redis-kill", Layout(), seed, base, _size(quick, 1, 3),
                      _size(quick, 150, 300), 3, disturb, more_due=extra)
    return _with_ingested(row, extra, seen_by_client)


def _with_ingested(row: Row, extra: dict[str, float], seen: list[Ingested]) -> Row:
    """`row` noting as problems the events never acknowledged or refused."""
    got = seen[0] if seen else Ingested()
    events = len(extra) // len(workload.PER_MESSAGE)
    if len(got.acked) < events:
        row.problems.append(f"{events - len(got.acked)} events never acknowledged")
    if got.refused:
        row.problems.append(f"events refused: {got.refused[:5]}")
    return row


def providers(seed: int, quick: bool, base: Path) -> Row:
    """(f) SMS and email through the Twilio and SendGrid stand-ins, which answer 10% 429,
    5% 500, 2% a timeout after taking the message, 1% a permanent refusal
    (`chaos/providers.py`). Lease 30 s: with a provider the lease must outlast its call."""
    with stand_ins(seed) as fakes:
        layout = Layout(workers=((1, 4), (1, 4)), lease_s=30, stand_ins=fakes)
        return _under_load("providers", layout, seed, base, 1, _size(quick, 40, 1000), 0,
                           lambda svc, rng, bursts: [], provider=True)


def _ingest_row(name: str, layout: Layout, seed: int, base: Path, messages: int,
                seconds: float, disturb: Callable[[Service, random.Random, threading.Thread],
                                                  list[str]]) -> tuple[Row, Ingested]:
    """Post `messages` escalations, paced over `seconds` by the retrying integrator, each
    due 1 s after the stream starts or later, while `disturb(service, rng, posting)` runs;
    settle and tally."""
    began = time.perf_counter()
    rng = random.Random(seed)
    tag = f"{name[:1]}{seed}"
    with running(layout, base, name) as svc:
        first = datetime.now(UTC) + timedelta(seconds=1)
        svc.post_people(first, tag)
        dues = spread(first, messages, seconds)
        got: list[Ingested] = []
        posting = threading.Thread(target=lambda: got.append(ingest(
            svc.port, svc.secret, workload.message_events(dues, tag),
            pace_s=seconds / messages)))
        posting.start()
        notes = disturb(svc, rng, posting)
        posting.join()
        wait_applied(svc.server.client(0), svc.alive)
        due = due_times(dues, tag)
        svc.settle(due)
        seen = svc.seen()
        hooks = svc.webhooks(list(due))
    row = _with_ingested(tally(name, due, seen), due, got)
    row.notes += notes
    _with_webhooks(row, *hooks)
    row.wall_s = time.perf_counter() - began
    return row, got[0]


def web_kills(seed: int, quick: bool, base: Path) -> Row:
    """(d) SIGKILL the web every 1-2 s while the integrator posts events, restarted at
    once; every event it answered 202 (or 200 duplicate) is applied and its notifications
    sent once."""
    def disturb(svc: Service, rng: random.Random, posting: threading.Thread) -> list[str]:
        killed = 0
        while posting.is_alive():
            time.sleep(rng.uniform(1.0, 2.0))
            web = svc.procs.of("web")
            web.kill()
            web.wait(timeout=10)
            svc.procs.restart("web")
            killed += 1
        return [f"web SIGKILLed {killed} times"]

    row, got = _ingest_row("web-kill", Layout(), seed, base, _size(quick, 120, 1000),
                           _size(quick, 4, 30), disturb)
    row.notes.append(f"{got.retried} tries unanswered and retried, "
                     f"{sum(1 for s in got.acked.values() if s == 200)} answered duplicate")
    return row


#: The web's read timeout in the hostile-clients experiment, seconds (default 10).
READ_TIMEOUT_S = 3.0


def slow_clients(seed: int, quick: bool, base: Path) -> Row:
    """(g) While the integrator posts events, connections that drip a body a byte a second
    (100; full 400) and one a 50 ms that hangs up mid-body: every real event is answered
    202 within the read timeout (3 s here), and the server closes every slow one."""
    seen = Hostile()

    def disturb(svc: Service, rng: random.Random, posting: threading.Thread) -> list[str]:
        stop = threading.Event()
        thread = hostile(svc.port, _size(quick, 100, 400), 20, stop, seen)
        posting.join()
        # Until the server closed every slow one (or it fails to, by the read timeout).
        deadline = time.monotonic() + READ_TIMEOUT_S + 2
        while seen.closed_by_server < seen.slow and time.monotonic() < deadline:
            time.sleep(0.1)
        stop.set()
        thread.join(timeout=30)
        return [f"{seen.slow} slow connections, {seen.closed_by_server} closed by the "
                f"server; {seen.vanished} hung up mid-body"]

    layout = Layout(env={"NOTIFIER_WEB_READ_TIMEOUT_S": str(READ_TIMEOUT_S)})
    row, got = _ingest_row("slow-clients", layout, seed, base, _size(quick, 100, 600),
                           _size(quick, 3, 30), disturb)
    worst = max(got.latencies, default=0.0)
    row.notes.append(f"real events answered in p99 "
                     f"{common.percentile(sorted(got.latencies), 0.99):.3f} s, "
                     f"max {worst:.3f} s")
    if worst >= READ_TIMEOUT_S or got.retried:
        row.problems.append(f"real events slowed: max {worst:.2f} s, {got.retried} retried")
    if seen.closed_by_server < seen.slow:
        row.problems.append(f"{seen.slow - seen.closed_by_server} slow connections left open")
    return row


#: Every experiment by name, in the order they run.
EXPERIMENTS: dict[str, Callable[[int, bool, Path], Row]] = {
    "worker-kill": worker_kills, "worker-pause": worker_pause, "clock-kill": clock_kills,
    "web-kill": web_kills, "redis-kill": redis_kills, "providers": providers,
    "slow-clients": slow_clients,
}
