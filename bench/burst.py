"""Benchmark: a burst of N notifications due at one instant T, drained to the outbox by
the real processes, beside Celery ETA tasks and dramatiq delayed messages on the same Redis.

How to run:

    python -m bench.burst                  # N = 20,000, each system 2 processes x 4 threads
    python -m bench.burst --quick          # N = 3,000 (what `make bench` runs)
    python -m bench.burst --count 3000 --processes 1 --threads 8 --no-defaults --no-peers

How it works, per system, one after the other on one private redis-server (no
persistence; ours on DB 0, Celery on DB 1, dramatiq on DB 2):

- Notifier: starts the Procfile's processes as subprocesses (`notifier web`, `notifier
  clock` and `notifier worker --processes P --threads T`; then once more with `notifier
  worker` at its own defaults), outbox delivery on both channels. It posts signed
  `message.received` events over HTTP (16 connections) that escalate at T (see
  `bench/workload.py`: 3 notifications each), lets the workers apply them, and waits for T.
- Celery: P x `celery worker --pool threads --concurrency T`; the same N notifications
  sent as ETA tasks (`eta=T`) whose task renders the same template and appends the same
  outbox line (`bench/peer_work.py`).
- dramatiq: `dramatiq --processes P --threads T`, the same task sent with
  `send_with_options(delay=...)` to fall due at T.

How to read the table: "drain" is N / (last sent_at - T); lateness is each message's
sent_at - due_at from its outbox line; CPU is utime + stime of the worker (and our clock)
processes between T and the last send, from /proc, per 1,000 sends ("Redis CPU" is the
server's own); "Redis bytes per pending" is used_memory just before T minus before
planning, per notification (ours holds the events, records and indexes too; a peer's
depends on how much its workers have pre-fetched by then: Celery moves each ETA task from
its queue list to its `unacked` hash, which costs more, as it fetches it). Lost and
duplicates are read from the outbox and must be 0. The ratio column is ours at the same
resources against the best peer (drain: higher is better; the others: lower is better).
The machine is shared: on a busy 2-core machine every figure moves by 10-30% between runs;
compare systems within one run, not across runs. Results also go to var/bench/burst.json.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from bench import common, layouts, peer_celery, peer_dramatiq, peer_work, workload
from notifier.ledger.events import pending_count
from notifier.ledger.notifications import pending_counts, queue_pending_counts
from notifier.ledger.shards import ledger_keys

#: Seconds between the processes being up and T, beyond the planning itself.
START_MARGIN_S = 1.5


@dataclass
class Run:
    system: str
    layout: str
    count: int
    #: seconds from the first event posted (or task sent) to all planned
    plan_s: float
    #: whether everything was planned before T (otherwise lateness includes planning)
    planned_before_t: bool
    drain_s: float
    sent: int
    lost: int
    duplicates: int
    p50_s: float
    p95_s: float
    p99_s: float
    max_s: float
    cpu_s_per_1k: float
    redis_cpu_s_per_1k: float
    redis_bytes_per_pending: float
    #: each Redis process's own CPU per 1,000 sends, by name (`bench.layouts`: `redis`;
    #: `ledger`, `broker`; `master0`...); `redis_cpu_s_per_1k` is their sum
    server_cpu_s_per_1k: dict[str, float] = field(default_factory=dict)
    #: commands each Redis process served per send, by name (Lua scripts count once)
    server_commands_per_send: dict[str, float] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.sent / self.drain_s if self.drain_s > 0 else float("nan")


@dataclass
class Drained:
    sends: workload.Sends
    cpu_s: float
    #: each Redis process's CPU seconds, by name
    server_cpu_s: dict[str, float]
    #: what each of `drain`'s counters grew by, by name
    counted: dict[str, int] = field(default_factory=dict)

    @property
    def redis_cpu_s(self) -> float:
        return sum(self.server_cpu_s.values())


def drain(outbox: Path, expected: set[str], due: float, pids: list[int],
          server_pids: dict[str, int], alive: Callable[[], None], stall_s: float = 30.0,
          counters: Callable[[], dict[str, int]] | None = None) -> Drained:
    """Wait for T (`due`, epoch seconds), then until every expected line is in the outbox
    (or nothing new came for `stall_s`); CPU of `pids`, and of each Redis process of
    `server_pids` (by name), over that time, and how much each of `counters()` (commands
    by server, say) grew."""
    while time.time() < due:
        time.sleep(min(0.01, max(0.0, due - time.time())))
    counted0 = counters() if counters else {}
    cpu0 = common.cpu_seconds(pids)
    redis0 = {name: common.cpu_seconds([pid]) for name, pid in server_pids.items()}
    tail = workload.OutboxTail(outbox / "messages.jsonl")
    last_change, seen = time.monotonic(), 0
    while seen < len(expected):
        time.sleep(0.02)
        count = tail.count()
        if count != seen:
            seen, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > stall_s:
            alive()
            break
    cpu1 = common.cpu_seconds(pids)
    redis1 = {name: common.cpu_seconds([pid]) for name, pid in server_pids.items()}
    counted1 = counters() if counters else {}
    time.sleep(0.5)  # a duplicate sent just after the last line still shows
    return Drained(workload.read_sends(outbox / "messages.jsonl", expected), cpu1 - cpu0,
                   {name: redis1[name] - redis0[name] for name in server_pids},
                   {name: n - counted0[name] for name, n in counted1.items()})


def result(system: str, layout: str, expected: set[str], plan_s: float, planned_at: float,
           due: float, drained: Drained, memory_delta: int) -> Run:
    """The run's figures; `drained.counted`: each Redis process's commands, if counted."""
    s = drained.sends
    per_1k = 1000 / s.sent if s.sent else float("nan")
    return Run(system=system, layout=layout, count=len(expected), plan_s=plan_s,
               planned_before_t=planned_at <= due, drain_s=max(0.0, s.last_sent - due),
               sent=s.sent, lost=s.lost, duplicates=s.duplicates,
               p50_s=common.percentile(s.lateness, 0.50),
               p95_s=common.percentile(s.lateness, 0.95),
               p99_s=common.percentile(s.lateness, 0.99),
               max_s=s.lateness[-1] if s.lateness else float("nan"),
               cpu_s_per_1k=drained.cpu_s * per_1k,
               redis_cpu_s_per_1k=drained.redis_cpu_s * per_1k,
               redis_bytes_per_pending=memory_delta / len(expected),
               server_cpu_s_per_1k={name: cpu * per_1k
                                    for name, cpu in drained.server_cpu_s.items()},
               server_commands_per_send={name: n / s.sent if s.sent else float("nan")
                                         for name, n in drained.counted.items()})


def fresh_dir(base: Path, name: str) -> Path:
    path = base / name
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def messages_for(count: int) -> int:
    """How many `message.received` events make at least `count` notifications."""
    return -(-count // len(workload.PER_MESSAGE))


# Notifier -----------------------------------------------------------------------------------
def plan_through_events(r: Any, port: int, count: int, due: datetime,
                        tag: str, secret: str, alive: Callable[[], None],
                        dues: list[datetime] | None = None) -> tuple[set[str], float]:
    """Post the people, then the messages escalating at `due` (or at each of `dues`) to
    the web on `port`; return once the workers applied every one, read on the ledger
    client `r`: (the notification ids planned, seconds it took). Raises `RuntimeError`
    when an event is refused."""
    zone = workload.midday_zone(due)
    started = time.perf_counter()
    people = workload.sign_all(secret, workload.people_events(due, zone, tag))
    _, _, refused = workload.post(port, people)
    wait_applied(r, alive)
    messages = dues or [due] * messages_for(count)
    _, _, refused2 = workload.post(port, workload.sign_all(
        secret, workload.message_events(messages, tag)))
    if refused or refused2:
        raise RuntimeError(f"{refused + refused2} events were not accepted (see the web log)")
    wait_applied(r, alive)
    expected = workload.expected_ids(len(messages), tag)
    keys = ledger_keys(r)
    with r.pipeline(transaction=False) as pipe:
        queue_pending_counts(pipe, keys)
        scheduled = pending_counts(keys, pipe.execute())[0]
    if time.time() < min(messages).timestamp() and scheduled < len(expected):
        raise RuntimeError(f"{scheduled} notifications scheduled, {len(expected)} expected")
    return expected, time.perf_counter() - started


def wait_applied(r: Any, alive: Callable[[], None], timeout_s: float = 600.0) -> None:
    deadline = time.monotonic() + timeout_s
    keys = ledger_keys(r)
    while pending_count(r, keys):
        alive()
        if time.monotonic() > deadline:
            raise RuntimeError(f"events still unapplied after {timeout_s:.0f} s")
        time.sleep(0.02)


#: Events posted and applied per second, first guess (a busy 2-core machine); later runs
#: of one invocation use what the first measured.
PLAN_RATE_GUESS = 250.0
#: Tasks a peer's client sends per second, first guess.
PEER_SEND_RATE_GUESS = 2000.0


def plan_margin_s(messages: int, plan_rate: float) -> float:
    """How long after start-up T is set: the planning at `plan_rate` events/s, with room
    (a run that overruns says so in its table)."""
    return START_MARGIN_S + 1.2 * messages / plan_rate


def run_ours(server: common.RedisServer | layouts.Servers, base: Path, count: int,
             processes: int | None,
             threads: int | None, plan_rate: float = PLAN_RATE_GUESS,
             spread_s: float = 0.0, fsync_from_due: str | None = None,
             at_due: Callable[[int, str, int], None] | None = None,
             secret: str | None = None, env_extra: dict[str, str] | None = None,
             on_drained: Callable[[], None] | None = None) -> Run:
    """Our Procfile processes, the worker as `notifier worker --processes P --threads T`
    (None: `notifier worker` at its defaults). The `count` notifications fall due at T, or, with
    `spread_s`, evenly from T over that many seconds (three at each instant). `at_due(port,
    secret, web_pid)`, if given, runs in a thread from T on, and is waited for.
    `fsync_from_due`: the server's `appendfsync` is set to it once everything is planned
    (planning under `always` is slow, and it is not what is measured). `secret`: the
    webhook secret (default: a new one). `env_extra`: more NOTIFIER_* settings for every
    process (delivery-webhook endpoints, say). `on_drained()`, if given, runs once the
    drain is measured, before the processes are stopped. `server`: one Redis (its
    database 0 holds ledger and queue), or a layout's servers (`bench.layouts`: the queue
    on a Redis of its own, the ledger on one Redis or a cluster), each emptied first."""
    servers = server if isinstance(server, layouts.Servers) else layouts.one(server)
    label = "defaults" if processes is None else f"{processes}x{threads}"
    work = fresh_dir(base, f"ours-{label}")
    servers.flush()
    r = servers.ledger()
    secret = secret or workload.new_secret()
    env = common.python_env(common.product_env(servers.ledger_url, work / "outbox", secret,
                                               work / "var",
                                               **(servers.env() | (env_extra or {}))))
    commands = common.product_commands(processes, threads)
    port = common.web_port(commands)
    with common.processes(commands, env, work, work / "logs") as procs:
        common.wait_for_http(port, alive=procs)
        common.wait_settled(procs.pids)
        base_memory = servers.used_memory()
        messages = messages_for(count)
        due = datetime.now(UTC) + timedelta(seconds=plan_margin_s(messages, plan_rate))
        dues = [due + timedelta(seconds=spread_s * i / messages) for i in range(messages)]
        expected, plan_s = plan_through_events(r, port, count, due, "b", secret,
                                               procs.check_alive, dues)
        planned_at = time.time()
        memory = servers.used_memory() - base_memory
        if fsync_from_due is not None:
            servers.config_set("appendfsync", fsync_from_due)
        senders = [pid for name, pid in zip(procs.names, procs.pids, strict=True)
                   if name != "web"]
        # Our clock is one more (mostly idle) process than the peers have: said, and its
        # CPU counted with the workers'.
        layout = (default_layout(senders[0]) if processes is None
                  else f"{processes} x {threads}") + " + clock"
        side = None
        if at_due is not None:
            web_pid = procs.pids[procs.names.index("web")]
            side = threading.Thread(target=_at, args=(due.timestamp(), at_due,
                                                      (port, secret, web_pid)))
            side.start()
        drained = drain(work / "outbox", expected, due.timestamp(), senders, servers.pids,
                        procs.check_alive, counters=servers.commands)
        if side is not None:
            side.join()
        if on_drained is not None:
            on_drained()
    r.close()
    return result("Notifier" + (" (defaults)" if processes is None else ""), layout,
                  expected, plan_s, planned_at, due.timestamp(), drained, memory)


def _at(due: float, work: Callable[..., None], args: tuple[Any, ...]) -> None:
    time.sleep(max(0.0, due - time.time()))
    work(*args)


def default_layout(worker_pid: int) -> str:
    """`notifier worker` at its defaults: its working processes x the threads its settings
    give each. A working process is one of the tree (itself and what it forked) running
    at least 3 threads, so a supervisor that only forks and waits is not counted."""
    from notifier.config import Settings

    working = sum(1 for pid in [worker_pid, *_descendants(worker_pid)] if _threads(pid) >= 3)
    threads = Settings.from_env({}, dotenv=Path("/nonexistent")).worker_threads
    return f"{max(1, working)} x {threads}"


def _threads(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    tree = common.children()
    out, todo = [], list(tree.get(pid, []))
    while todo:
        child = todo.pop()
        out.append(child)
        todo.extend(tree.get(child, []))
    return out


# Peers --------------------------------------------------------------------------------------
def run_peer(server: common.RedisServer, base: Path, system: str, count: int, processes: int,
             threads: int, send_rate: float = PEER_SEND_RATE_GUESS) -> Run:
    """A peer's workers (`processes` x `threads`), the tasks sent due at T, drained."""
    db = {"Celery": 1, "dramatiq": 2}[system]
    work = fresh_dir(base, system.lower())
    r = server.client(db)
    r.flushdb()
    url = server.url_for(db)
    env = common.python_env({peer_celery.BROKER_ENV: url,
                             peer_work.OUTBOX_ENV: str(work / "outbox")})
    commands: list[tuple[str, list[str]]]
    if system == "Celery":
        commands = [(f"celery-{i}", [sys.executable, "-m", "celery", "-A", "bench.peer_celery",
                                     "worker", "--pool", "threads", "--concurrency",
                                     str(threads), "--without-gossip", "--without-mingle",
                                     "--without-heartbeat", "--loglevel", "WARNING",
                                     "-n", f"w{i}@bench"]) for i in range(processes)]
    else:
        commands = [("dramatiq", [sys.executable, "-m", "dramatiq", "bench.peer_dramatiq",
                                  "--processes", str(processes), "--threads", str(threads),
                                  "--queues", peer_dramatiq.QUEUE])]
    messages = messages_for(count)
    with common.processes(commands, env, work, work / "logs") as procs:
        common.wait_settled(procs.pids)
        base_memory = int(r.info("memory")["used_memory"])
        due = datetime.now(UTC) + timedelta(seconds=1.0 + 1.2 * count / send_rate)
        tasks = workload.peer_tasks([due] * messages, "b")
        started = time.perf_counter()
        send = celery_sender(url) if system == "Celery" else dramatiq_sender(url)
        with send as enqueue:
            for task in tasks:
                enqueue(asdict(task), due)
        plan_s = time.perf_counter() - started
        planned_at = time.time()
        # Let the workers fetch what they pre-fetch, so the memory is what waits in Redis.
        while time.time() < due.timestamp() - 0.3:
            time.sleep(0.05)
        memory = int(r.info("memory")["used_memory"]) - base_memory
        expected = {t.id for t in tasks}
        drained = drain(work / "outbox", expected, due.timestamp(), procs.pids,
                        {"redis": server.pid}, procs.check_alive)
    return result(system, f"{processes} x {threads}", expected, plan_s, planned_at,
                  due.timestamp(), drained, memory)


Enqueue = Callable[[dict[str, Any], datetime], None]


class _Sender(AbstractContextManager[Enqueue]):
    def __init__(self, enqueue: Enqueue, close: Callable[[], None]) -> None:
        self.enqueue, self.close = enqueue, close

    def __enter__(self) -> Enqueue:
        return self.enqueue

    def __exit__(self, *exc: object) -> None:
        self.close()


def celery_sender(url: str) -> _Sender:
    app = peer_celery.producer(url)

    def enqueue(task: dict[str, Any], due: datetime) -> None:
        app.send_task(peer_celery.TASK, args=[task], eta=due)

    return _Sender(enqueue, app.close)


def dramatiq_sender(url: str) -> _Sender:
    import dramatiq

    broker = peer_dramatiq.build_broker(url)

    def enqueue(task: dict[str, Any], due: datetime) -> None:
        delay_ms = max(0, int((due.timestamp() - time.time()) * 1000))
        broker.enqueue(dramatiq.Message(queue_name=peer_dramatiq.QUEUE, actor_name="deliver",
                                        args=(task,), kwargs={}, options={}), delay=delay_ms)

    return _Sender(enqueue, broker.close)


# The table ----------------------------------------------------------------------------------
def rows(runs: list[Run]) -> tuple[list[str], list[list[Any]]]:
    ours = next((r for r in runs if r.system == "Notifier"), runs[0])
    peers = [r for r in runs if r.system in ("Celery", "dramatiq")]
    headers = ["figure", *(f"{r.system} ({r.layout})" for r in runs)]
    if peers:
        headers.append("ours / best peer")

    def line(name: str, values: list[Any], best: Callable[[list[float]], float] | None,
             ours_value: float) -> list[Any]:
        row: list[Any] = [name, *values]
        if peers:
            row.append(common.ratio(ours_value, best([getattr_f(p, name) for p in peers]))
                       if best else "")
        return row

    def getattr_f(run: Run, name: str) -> float:
        return float({"drain /s": run.rate, "lateness p50 s": run.p50_s,
                      "lateness p99 s": run.p99_s, "lateness max s": run.max_s,
                      "CPU s per 1,000 sends": run.cpu_s_per_1k,
                      "Redis CPU s per 1,000 sends": run.redis_cpu_s_per_1k,
                      "Redis bytes per pending": run.redis_bytes_per_pending}[name])

    table: list[list[Any]] = [["notifications due at T", *(r.count for r in runs)]
                              + ([""] if peers else [])]
    for name, best in (("drain /s", max), ("lateness p50 s", min), ("lateness p99 s", min),
                       ("lateness max s", min), ("CPU s per 1,000 sends", min),
                       ("Redis CPU s per 1,000 sends", min), ("Redis bytes per pending", min)):
        table.append(line(name, [getattr_f(r, name) for r in runs], best,
                          getattr_f(ours, name)))
    table.append(["lost / duplicates", *(f"{r.lost} / {r.duplicates}" for r in runs)]
                 + ([""] if peers else []))
    table.append(["planned before T (s to plan)",
                  *(f"{'yes' if r.planned_before_t else 'NO'} ({r.plan_s:.1f})" for r in runs)]
                 + ([""] if peers else []))
    return headers, table


def planned_in_time(attempt: Callable[[float], Run], rate: float, items: int) -> Run:
    """`attempt(rate)`, and once more at the rate it measured (with room) when its
    planning overran T: a busy machine plans slower than guessed, and a burst that is
    still being planned at T measures the planning, not the drain."""
    run = attempt(rate)
    if run.planned_before_t:
        return run
    return attempt(0.8 * items / run.plan_s)


def run_burst(count: int, processes: int, threads: int, *, defaults: bool = True,
              peers: bool = True) -> tuple[list[Run], common.Machine]:
    """Every system, one after the other, on one private Redis: the runs, ours first, and
    the machine they ran on. Raises `RuntimeError` when a process exits early or an event
    is refused."""
    runs = []
    with common.redis_server() as server:
        base = server.dir / "runs"
        messages = messages_for(count)
        ours = planned_in_time(partial(run_ours, server, base, count, processes, threads),
                               PLAN_RATE_GUESS, messages)
        runs.append(ours)
        if defaults:
            runs.append(planned_in_time(partial(run_ours, server, base, count, None, None),
                                        messages / ours.plan_s, messages))
        if peers:
            for system in ("Celery", "dramatiq"):
                runs.append(planned_in_time(
                    partial(run_peer, server, base, system, count, processes, threads),
                    PEER_SEND_RATE_GUESS, count))
        box = common.machine(server.url)
    return runs, box


def report(runs: list[Run], box: common.Machine) -> None:
    """Print the table and write var/bench/burst.json."""
    headers, table = rows(runs)
    notes = [f"N = {runs[0].count:,} notifications due at one instant (3 per `message.received`"
             " event, posted over HTTP before T); every system on the same redis-server, "
             "one after the other.",
             "The machine is shared with other work: figures move by 10-30% between runs."]
    stale = [r.system for r in runs if not r.planned_before_t]
    if stale:
        notes.append(f"NOT planned before T: {', '.join(stale)}; their lateness includes "
                     "planning: raise `PLAN_RATE_GUESS`.")
    common.report("burst", "burst: N notifications due at one instant", box,
                  common.table(headers, table), {"runs": [asdict(r) | {"rate": r.rate}
                                                          for r in runs]}, notes)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--count", type=int, default=None,
                        help="notifications due at T (default 20,000; --quick 3,000)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--threads", type=int, default=4)
    parser.add_argument("--no-defaults", action="store_true",
                        help="skip ours at `notifier worker`'s own defaults")
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args(argv)
    count = args.count or (3_000 if args.quick else 20_000)
    runs, box = run_burst(count, args.processes, args.threads,
                          defaults=not args.no_defaults, peers=not args.no_peers)
    report(runs, box)
    check_guarantees(runs)


def check_guarantees(runs: list[Run]) -> None:
    """Exit non-zero when one of our runs lost or duplicated a notification: a broken
    guarantee is a failure, not a figure. (A peer's losses are only shown.)"""
    broken = [f"{r.system} ({r.layout}): {r.lost} lost, {r.duplicates} duplicates"
              for r in runs if r.system.startswith("Notifier") and (r.lost or r.duplicates)]
    if broken:
        raise SystemExit("guarantee broken: " + "; ".join(broken))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
