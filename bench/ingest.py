"""Benchmark: `POST /v1/events` ingest over HTTP, events/s and latency, from 16 concurrent
clients, with Redis fsyncing its append-only file always and every second, and once
while a burst is draining.

How to run:

    python -m bench.ingest                 # 30 s per variant
    python -m bench.ingest --quick         # 3 s per variant (what `make bench` runs)
    python -m bench.ingest --seconds 10 --clients 32 --burst 20000

How it works: a private redis-server with `appendonly yes` and the chosen `appendfsync`;
the real `notifier web` process (the Procfile's) on 127.0.0.1. Distinct signed
`appointment.completed` events (each its own subject) are signed beforehand, then sent
from `--clients` keep-alive connections for `--seconds` (after a 200-event warm-up that
is not counted; the web is warm from the burst's events in the third variant). Every
answer must be 202 ("refused" counts the others).

- `always` and `everysec`: `notifier web` alone (one process, the policy switched with
  CONFIG SET between the two); the events wait for a worker that is not started, so only
  storing and enqueueing is measured.
- `always, burst draining`: the whole product (web, clock, `notifier worker` at its
  defaults) with a burst of `--burst` notifications falling due (`bench/burst.py`); the
  load starts at the burst's due instant and runs while it drains. The burst is planned
  under `everysec` and the server switched to `always` before its due instant.

How to read it: events/s is answered requests over the wall time; latency is from the
request's first byte written to its answer read, per request. "web CPU" is the web
process's utime + stime per 1,000 events. The goal (issue 12) is >= 2,000 events/s with
p99 < 50 ms while a burst drains, on 2 cores. The load generator runs on the same 2
cores (and so do the other helpers' test runs): figures are noisy, and lower than on a
machine with a separate client. Results also go to var/bench/ingest.json.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from typing import Any

from bench import common, workload
from bench.burst import PLAN_RATE_GUESS, fresh_dir, messages_for, planned_in_time, run_ours

#: Events signed beforehand per second of load: more than the web can take here.
SIGNED_PER_S = 4000
WARM_UP = 200


@dataclass
class Ingest:
    variant: str
    clients: int
    events: int
    seconds: float
    refused: int
    p50_ms: float
    p99_ms: float
    max_ms: float
    web_cpu_s_per_1k: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else float("nan")


def completed_events(first: int, count: int) -> list[bytes]:
    now = datetime.now(UTC)
    return [json.dumps({"id": f"ingest-{i}", "type": "appointment.completed",
                        "occurred_at": now.isoformat(),
                        "data": {"appointment_id": f"a{i}"}}).encode()
            for i in range(first, first + count)]


def load(variant: str, port: int, requests: list[bytes], web_pid: int, clients: int,
         seconds: float) -> Ingest:
    """Send the signed `requests` for `seconds` from `clients` connections."""
    cpu0 = common.cpu_seconds([web_pid])
    wall, latencies, refused = workload.post(port, requests, clients, duration_s=seconds)
    cpu = common.cpu_seconds([web_pid]) - cpu0
    ordered = sorted(latencies)
    return Ingest(variant=variant, clients=clients, events=len(latencies), seconds=wall,
                  refused=refused, p50_ms=common.percentile(ordered, 0.5) * 1000,
                  p99_ms=common.percentile(ordered, 0.99) * 1000,
                  max_ms=ordered[-1] * 1000 if ordered else float("nan"),
                  web_cpu_s_per_1k=cpu * 1000 / max(1, len(latencies)))


def signed(secret: str, first: int, seconds: float) -> list[bytes]:
    """Enough signed events for `seconds` of load, numbered from `first`."""
    return workload.sign_all(secret, completed_events(first, int(SIGNED_PER_S * seconds)))


def web_alone(policies: list[str], clients: int, seconds: float
              ) -> tuple[list[Ingest], common.Machine]:
    """`notifier web` alone, loaded once per fsync policy (set with CONFIG SET between
    them, on one server and one web process)."""
    with common.redis_server(policies[0]) as server:
        work = fresh_dir(server.dir, "web")
        secret = workload.new_secret()
        env = common.python_env(common.product_env(server.url, work / "outbox", secret,
                                                   work / "var"))
        commands = common.product_commands(0, None, clock=False)
        port = common.web_port(commands)
        results = []
        with common.processes(commands, env, work, work / "logs") as procs:
            common.wait_for_http(port, alive=procs)
            common.wait_settled(procs.pids)
            r = server.client()
            workload.post(port, workload.sign_all(secret, completed_events(0, WARM_UP)),
                          clients)
            for n, policy in enumerate(policies):
                requests = signed(secret, WARM_UP + n * int(SIGNED_PER_S * seconds), seconds)
                r.config_set("appendfsync", policy)
                results.append(load(f"appendfsync {policy}", port, requests, procs.pids[-1],
                                    clients, seconds))
        return results, common.machine(server.url)


def during_burst(clients: int, seconds: float, burst: int) -> tuple[Ingest, Any]:
    """The load while `burst` notifications drain: (the ingest, the burst's run)."""
    found: list[Ingest] = []
    secret = workload.new_secret()
    # Signed before the burst's due instant, so the load starts at it (the web is warm
    # from posting the burst's events).
    requests = signed(secret, 0, seconds)
    with common.redis_server("everysec") as server:
        def at_due(port: int, _secret: str, web_pid: int) -> None:
            found.append(load("appendfsync always, burst draining", port, requests, web_pid,
                              clients, seconds))

        burst_run = planned_in_time(
            partial(run_ours, server, server.dir / "runs", burst, None, None,
                    fsync_from_due="always", at_due=at_due, secret=secret),
            PLAN_RATE_GUESS, messages_for(burst))
    # The last: a first attempt whose burst was still being planned at T is run again.
    return found[-1], burst_run


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--seconds", type=float, default=None,
                        help="load per variant (default 30; --quick 3)")
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--burst", type=int, default=None,
                        help="notifications draining meanwhile (default 20,000; --quick 3,000)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    seconds = args.seconds or (3.0 if args.quick else 30.0)
    burst = args.burst or (3_000 if args.quick else 20_000)
    runs, box = web_alone(["always", "everysec"], args.clients, seconds)
    draining, burst_run = during_burst(args.clients, seconds, burst)
    runs.append(draining)
    rows = [[r.variant, r.clients, r.events, r.rate, r.p50_ms, r.p99_ms, r.max_ms,
             r.web_cpu_s_per_1k, r.refused] for r in runs]
    notes = [f"While draining: {burst_run.count:,} notifications due at the load's start, "
             f"drained at {burst_run.rate:,.0f}/s (lateness p99 {burst_run.p99_s:.2f} s) by "
             f"`notifier worker` at its defaults ({burst_run.layout}).",
             "Goal (issue 12): >= 2,000 events/s, p99 < 50 ms, while a burst drains.",
             "The load generator shares the 2 cores with the web and Redis, and the machine is "
             "shared with other work: figures are noisy."]
    common.report("ingest", f"ingest: POST /v1/events, {args.clients} clients, "
                  f"{seconds:.0f} s each", box,
                  common.table(["variant", "clients", "events", "events/s", "p50 ms",
                                "p99 ms", "max ms", "web CPU s per 1,000", "refused"], rows),
                  {"runs": [asdict(r) | {"rate": r.rate} for r in runs],
                   "burst": asdict(burst_run)}, notes)


if __name__ == "__main__":
    main()
