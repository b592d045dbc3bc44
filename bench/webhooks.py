"""Benchmark: delivery webhooks (issue 14): how many messages a second the dispatcher sends
to a local receiver, and whether a dead endpoint makes reminders late.

How to run:

    python -m bench.webhooks               # 10,000 messages; a burst of 6,000 reminders, twice
    python -m bench.webhooks --quick       # 1,500 messages; 1,200 reminders (`make bench`)
    python -m bench.webhooks --messages 5000 --count 3000 --rounds 3 --processes 1 --threads 4

How it works, on one private redis-server (no persistence):

1. Throughput: N `client.opted_out` announcements queued in the outbox
   (`queue_announcement`, 500 a pipeline), fanned out (`WebhookOutbox.fan_out` until the
   outbox is empty) to one endpoint subscribed to everything, then a `Dispatcher` in this
   process (its `max_in_flight` sender threads, as the worker's webhooks process runs it)
   sends them to a lean receiver in a process of its own (`bench/webhook_sinks.py`:
   `http.server`'s ThreadingHTTPServer answering 204, keep-alive, no verification), for
   `max_in_flight` 4 (the default) and 16. The rate is N / (the last delivered - the
   dispatcher's start), read from `WebhookOutbox.statuses` every 20 ms.
2. Lateness: the burst benchmark's harness (`bench/burst.py run_ours`: the Procfile's
   processes as subprocesses, signed `message.received` events over HTTP, 3 notifications
   each, all due at one instant T a few seconds ahead, outbox delivery) run (a) with no
   webhook endpoint, then (b) with one endpoint subscribed to every event type whose
   receiver accepts each connection and never answers (`DeadReceiver`), at the default
   timeout (10 s) and `max_in_flight` (4): every sender of the dispatcher is held for the
   whole timeout, the worst case. Endpoints are configured as a deployment does, by
   NOTIFIER_WEBHOOK_ENDPOINTS and NOTIFIER_WEBHOOK_SECRET_DEAD; `notifier worker` runs
   the dispatcher (a process of its own with more than one worker process, threads with
   one). `--rounds R` runs (a) and (b) R times, (b) first every other round (a, b, b, a,
   ...), so that a drift in the machine's load favours neither.

How to read it: lateness is each reminder's sent_at - due_at from its outbox line; the
issue's claim is that (b) - (a) is noise: the dispatcher shares no thread, queue or
connection with delivery. "attempts hung" shows the dead receiver did hold the dispatcher
(connections it accepted and never answered, by the end of the drain: `max_in_flight`
per timeout); "messages waiting" are the dead endpoint's pending messages then. Lost and
duplicates must be 0. The machine is shared: on a busy 2-core machine the tail of 6,000
reminders moved by up to a second between runs of (a) alone; compare (b) - (a) with the
spread of (a) over the rounds, not with zero. Results also go to var/bench/webhooks.json.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from statistics import median
from typing import Any

from pydantic import SecretStr

from bench import common, workload
from bench.burst import (
    PLAN_RATE_GUESS,
    Run,
    check_guarantees,
    messages_for,
    planned_in_time,
    run_ours,
)
from bench.webhook_sinks import DeadReceiver
from notifier.config import Settings
from notifier.ledger.announcements import queue_announcement
from notifier.ledger.embedded_redis import free_port
from notifier.ledger.shards import ShardKeys, ledger_keys
from notifier.webhooks.catalogue import Announcement, expand
from notifier.webhooks.dispatcher import Dispatcher
from notifier.webhooks.endpoints import Endpoint, secret_variable
from notifier.webhooks.outbox import WebhookOutbox, pending_key
from notifier.worker.processes import default_processes

#: The in-flight bounds measured: the default, and a higher one.
IN_FLIGHT = (4, 16)
#: Announcements queued per pipeline when filling the outbox.
FILL_BATCH = 500
#: The dead endpoint's name (its secret is NOTIFIER_WEBHOOK_SECRET_DEAD).
DEAD = "dead"


# 1. Throughput ------------------------------------------------------------------------------
@dataclass
class Throughput:
    max_in_flight: int
    messages: int
    delivered: int
    #: from the dispatcher's start to the last message delivered
    seconds: float
    #: this process (the dispatcher's threads and the 20 ms poll), per 1,000 messages
    cpu_s_per_1k: float
    receiver_cpu_s_per_1k: float
    redis_cpu_s_per_1k: float

    @property
    def rate(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else float("nan")


def fill_outbox(client: Any, keys: ShardKeys, count: int) -> None:
    """Queue `count` `client.opted_out` announcements, as an opt-out queues its own."""
    for start in range(0, count, FILL_BATCH):
        with client.pipeline(transaction=False) as pipe:
            for i in range(start, min(count, start + FILL_BATCH)):
                queue_announcement(pipe, keys, Announcement("client.opted_out", f"cl_{i}", {
                    "client_id": f"cl_{i}", "channel": "sms", "source": "sms_reply"}))
            pipe.execute()


def fan_out_all(outbox: WebhookOutbox) -> None:
    """Fan the whole outbox out. Raises `RuntimeError` when entries stay in it."""
    while outbox.fan_out(datetime.now(UTC)):
        pass
    left = outbox.waiting()
    if left:
        raise RuntimeError(f"{left} outbox entries were not fanned out")


def start_sink(log_dir: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The lean receiver (`bench/webhook_sinks.py`) as a process of its own, once it
    answers; (the process, its port)."""
    port = free_port()
    log_dir.mkdir(parents=True, exist_ok=True)
    with (log_dir / "sink.log").open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", "bench.webhook_sinks", str(port)],
                                env=common.python_env({}), cwd=common.ROOT, stdout=out,
                                stderr=subprocess.STDOUT)
    try:
        common.wait_for_http(port)
    except RuntimeError:
        proc.kill()
        raise
    return proc, port


def run_throughput(server: common.RedisServer, sink_port: int, sink_pid: int, count: int,
                   max_in_flight: int, stall_s: float = 30.0) -> Throughput:
    """`count` messages to one endpoint on the sink, sent by a `Dispatcher` with
    `max_in_flight` senders, timed until the last is delivered (or nothing more was
    delivered for `stall_s`: the figures then say how many were)."""
    r = server.client(0)
    r.flushdb()
    endpoint = Endpoint(name="sink", url=f"http://127.0.0.1:{sink_port}/hooks",
                        events=expand(["*"]), secret=SecretStr(workload.new_secret()),
                        max_in_flight=max_in_flight)
    outbox = WebhookOutbox(r, [endpoint], ledger_keys(r))
    fill_outbox(r, outbox.keys, count)
    fan_out_all(outbox)
    stop = threading.Event()
    sender = threading.Thread(target=Dispatcher(outbox).serve, args=(stop,), name="dispatcher")
    cpu0, sink0 = common.cpu_seconds([os.getpid()]), common.cpu_seconds([sink_pid])
    redis0 = common.cpu_seconds([server.pid])
    started = time.perf_counter()
    sender.start()
    delivered, last_change = 0, time.monotonic()
    try:
        while delivered < count:
            time.sleep(0.02)
            now = outbox.statuses(datetime.now(UTC))[0].delivered
            if now != delivered:
                delivered, last_change = now, time.monotonic()
            elif time.monotonic() - last_change > stall_s:
                break
        seconds = time.perf_counter() - started
        cpu1, sink1 = common.cpu_seconds([os.getpid()]), common.cpu_seconds([sink_pid])
        redis1 = common.cpu_seconds([server.pid])
    finally:
        stop.set()
        sender.join()
    per_1k = 1000 / delivered if delivered else float("nan")
    return Throughput(max_in_flight=max_in_flight, messages=count, delivered=delivered,
                      seconds=seconds, cpu_s_per_1k=(cpu1 - cpu0) * per_1k,
                      receiver_cpu_s_per_1k=(sink1 - sink0) * per_1k,
                      redis_cpu_s_per_1k=(redis1 - redis0) * per_1k)


# 2. Lateness with a dead endpoint -----------------------------------------------------------
@dataclass
class Lateness:
    #: "none" or "dead"
    endpoint: str
    run: Run
    #: connections the dead receiver accepted and never answered, by the end of the drain
    attempts_hung: int
    #: the dead endpoint's pending messages then
    messages_waiting: int


def dead_endpoint_env(url: str, secret: str) -> dict[str, str]:
    """The settings of one endpoint `dead` at `url`, subscribed to everything, at the
    default timeout and `max_in_flight`."""
    return {"NOTIFIER_WEBHOOK_ENDPOINTS": json.dumps(
                [{"name": DEAD, "url": url, "events": ["*"]}]),
            secret_variable(DEAD): secret}


def run_lateness(server: common.RedisServer, base: Path, count: int, processes: int | None,
                 threads: int | None, dead: bool, plan_rate: float = PLAN_RATE_GUESS
                 ) -> Lateness:
    """The burst harness's run of `count` reminders due at one instant, with no endpoint
    or (`dead`) with a dead one (a `DeadReceiver`, released once the drain is measured so
    that the processes stop without waiting out its timeout)."""
    if not dead:
        run = planned_in_time(partial(run_ours, server, base, count, processes, threads),
                              plan_rate, messages_for(count))
        return Lateness("none", _named(run, "no endpoint", processes, threads, dead), 0, 0)
    seen: dict[str, int] = {}

    def attempt(rate: float) -> Run:
        # A receiver per attempt: the one before was released.
        receiver = DeadReceiver()

        def on_drained() -> None:
            seen["held"] = receiver.held
            r = server.client(0)
            try:
                seen["waiting"] = int(r.zcard(pending_key(DEAD)))
            finally:
                r.close()
            receiver.release()

        try:
            return run_ours(server, base, count, processes, threads, rate,
                            env_extra=dead_endpoint_env(receiver.url, workload.new_secret()),
                            on_drained=on_drained)
        finally:
            receiver.release()

    run = planned_in_time(attempt, plan_rate, messages_for(count))
    return Lateness("dead", _named(run, "dead endpoint", processes, threads, dead),
                    seen.get("held", 0), seen.get("waiting", 0))


def _named(run: Run, what: str, processes: int | None, threads: int | None,
           dead: bool) -> Run:
    """`run` named for the table, with the worker's layout as `notifier worker` runs it
    (the burst harness counts a webhooks process as one more worker)."""
    procs = processes or default_processes()
    each = threads or Settings.from_env({}, dotenv=Path("/nonexistent")).worker_threads
    sender = ("" if not dead else " + webhooks process" if procs > 1
              else " + webhook threads")
    return replace(run, system=f"Notifier ({what})",
                   layout=f"{procs} x {each}{sender} + clock")


def lateness_rounds(server: common.RedisServer, count: int, processes: int | None,
                    threads: int | None, rounds: int) -> list[Lateness]:
    """(a) and (b), `rounds` times, (b) first in every other round, on one Redis; the
    planning rate the first run measured sets the others' T."""
    base = server.dir / "runs"
    runs: list[Lateness] = []
    rate = PLAN_RATE_GUESS
    for number in range(rounds):
        for dead in ((False, True) if number % 2 == 0 else (True, False)):
            done = run_lateness(server, base, count, processes, threads, dead, rate)
            rate = messages_for(count) / max(done.run.plan_s, 0.1)
            runs.append(done)
    return runs


# The table ----------------------------------------------------------------------------------
def throughput_rows(results: list[Throughput]) -> list[list[Any]]:
    return [[f"max_in_flight {t.max_in_flight}", f"{t.delivered:,} / {t.messages:,}",
             t.seconds, round(t.rate), t.cpu_s_per_1k, t.receiver_cpu_s_per_1k,
             t.redis_cpu_s_per_1k] for t in results]


THROUGHPUT_HEADERS = ["dispatcher", "delivered", "s", "messages/s", "CPU s/1,000 (dispatcher)",
                      "CPU s/1,000 (receiver)", "CPU s/1,000 (Redis)"]
#: The lateness figures of a `Run`, seconds.
LATENESS = ("p50_s", "p95_s", "p99_s", "max_s")
LATENESS_HEADERS = ["reminders due at T", "endpoint", "workers", "p50 s", "p95 s", "p99 s",
                    "max s", "CPU s/1,000 sends", "attempts hung / messages waiting",
                    "lost / duplicates"]


def lateness_rows(runs: list[Lateness]) -> list[list[Any]]:
    rows: list[list[Any]] = [
        [f"{x.run.count:,}", x.endpoint, x.run.layout,
         *(f"{getattr(x.run, name):.3f}" for name in LATENESS), x.run.cpu_s_per_1k,
         "-" if x.endpoint == "none" else f"{x.attempts_hung} / {x.messages_waiting:,}",
         f"{x.run.lost} / {x.run.duplicates}"] for x in runs]
    diff = difference(runs)
    rows.append(["(b) - (a)" + (" (medians of rounds)" if len(runs) > 2 else ""), "", "",
                 *(f"{diff[name]:+.3f}" for name in LATENESS), f"{diff['cpu_s_per_1k']:+.2f}",
                 "", ""])
    if len(runs) > 2:
        spread = noise(runs)
        rows.append(["(a) max - min over rounds (the noise)", "", "",
                     *(f"{spread[name]:.3f}" for name in LATENESS), "", "", ""])
    return rows


def difference(runs: list[Lateness]) -> dict[str, float]:
    """(b) - (a) of each figure, as medians over the rounds."""
    def of(endpoint: str, name: str) -> float:
        return median(float(getattr(x.run, name)) for x in runs if x.endpoint == endpoint)

    return {name: of("dead", name) - of("none", name) for name in (*LATENESS, "cpu_s_per_1k")}


def noise(runs: list[Lateness]) -> dict[str, float]:
    """How far (a)'s figures moved between rounds: max - min, seconds."""
    return {name: max(getattr(x.run, name) for x in runs if x.endpoint == "none")
            - min(getattr(x.run, name) for x in runs if x.endpoint == "none")
            for name in LATENESS}


def report(throughput: list[Throughput], lateness: list[Lateness],
           box: common.Machine) -> None:
    """Print both tables and write var/bench/webhooks.json."""
    body = ("Throughput: one endpoint, a lean receiver (`http.server` ThreadingHTTPServer "
            "answering 204, its own process, no verification):\n\n"
            + common.table(THROUGHPUT_HEADERS, throughput_rows(throughput))
            + "\n\nLateness of a burst of reminders due at one instant, (a) no webhook "
              "endpoint, (b) one dead endpoint (accepts, never answers; timeout 10 s, "
              "max_in_flight 4) subscribed to every event:\n\n"
            + common.table(LATENESS_HEADERS, lateness_rows(lateness)))
    notes = [f"{box.cores} cores; the dispatcher runs in this benchmark's process for (1), "
             "in `notifier worker`'s for (2).",
             "The machine is shared with other work: compare (b) - (a) with the spread "
             "between rounds, not with zero."]
    stale = [x.endpoint for x in lateness if not x.run.planned_before_t]
    if stale:
        notes.append(f"NOT planned before T: {', '.join(stale)}; their lateness includes "
                     "planning.")
    common.report("webhooks", "webhooks: messages/s, and reminders' lateness beside a dead "
                  "endpoint", box, body,
                  {"throughput": [asdict(t) | {"rate": t.rate} for t in throughput],
                   "lateness": [asdict(x) for x in lateness],
                   "difference": difference(lateness),
                   "noise": noise(lateness) if len(lateness) > 2 else None}, notes)


def run_all(messages: int, count: int, processes: int | None, threads: int | None,
            rounds: int, in_flight: tuple[int, ...] = IN_FLIGHT
            ) -> tuple[list[Throughput], list[Lateness], common.Machine]:
    """Both parts on one private Redis: the throughput at each of `in_flight`, then the
    lateness rounds. Raises `RuntimeError` when a process exits early or an event is
    refused."""
    with common.redis_server() as server:
        sink, port = start_sink(server.dir / "logs")
        try:
            throughput = [run_throughput(server, port, sink.pid, messages, n)
                          for n in in_flight]
        finally:
            sink.kill()
            sink.wait(timeout=10)
        lateness = lateness_rounds(server, count, processes, threads, rounds)
        box = common.machine(server.url)
    return throughput, lateness, box


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--messages", type=int, default=None,
                        help="messages for the throughput (default 10,000; --quick 1,500)")
    parser.add_argument("--count", type=int, default=None,
                        help="reminders due at T (default 6,000; --quick 1,200)")
    parser.add_argument("--rounds", type=int, default=None,
                        help="(a) and (b) alternated this many times (default 2; --quick 1)")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--processes", type=int, default=None,
                        help="`notifier worker --processes` (default: its own)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    messages = args.messages or (1_500 if args.quick else 10_000)
    count = args.count or (1_200 if args.quick else 6_000)
    rounds = args.rounds or (1 if args.quick else 2)
    throughput, lateness, box = run_all(messages, count, args.processes, args.threads, rounds)
    report(throughput, lateness, box)
    check_guarantees([x.run for x in lateness])
    short = [t for t in throughput if t.delivered < t.messages]
    if short:
        raise SystemExit("webhooks: not every message was delivered: " + "; ".join(
            f"max_in_flight {t.max_in_flight}: {t.delivered} of {t.messages}" for t in short))


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
