"""Benchmark: Redis bytes per pending notification, with all of our state.

How to run:

    python -m bench.memory                 # 5,000 bookings (30,000 notifications)
    python -m bench.memory --quick         # 500 bookings (what `make bench` runs)

How it works: a private redis-server (no persistence), `notifier web` and `notifier
worker` (no clock, so nothing is claimed or sent) as subprocesses. Signed
`client.upserted` events for 50 clients, then `appointment.scheduled` events, each a
visit 4 to 10 days ahead (two confirmations, due at once, and reminders 72 h and 24 h
before on SMS and email: 6 notifications each), are posted over HTTP and applied by the
worker. used_memory is read before the first event and after the last is applied.

How to read it: "bytes per pending notification" is that used_memory delta over the
notifications on the schedule, so it carries everything the events left behind: the
notification hashes, the schedule, the per-recipient and per-entity indexes, the
appointment and client records, the stored events (kept for duplicate detection) and
what is left of their subject queues. The breakdown below it sums MEMORY USAGE per key
family (the key up to its second `:`), per pending notification; the total of the
breakdown is below used_memory's delta (allocator overhead, the main dictionary). Goal
(issue 12): <= 1,000 B. Memory is deterministic; the machine's load does not change it.
Results also go to var/bench/memory.json.
"""

from __future__ import annotations

import argparse
import time
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from typing import Any

from bench import common, workload
from bench.burst import fresh_dir, wait_applied
from notifier.ledger.notifications import pending_counts, queue_pending_counts
from notifier.ledger.shards import ledger_keys
from notifier.webhooks.outbox import WebhookOutbox


def bookings(count: int, now: datetime) -> list[bytes]:
    """`count` new visits, 4 to 10 days ahead, for the workload's clients."""
    raws = []
    for i in range(count):
        start = (now + timedelta(days=4 + i % 6, hours=i % 9)).replace(minute=0, second=0,
                                                                      microsecond=0)
        raws.append(workload.event(f"mem-appt-{i:07d}", "appointment.scheduled",
                                   now - timedelta(minutes=5), {"appointment": {
                                       "id": f"appt-{i:07d}",
                                       "client_id": f"c{i % workload.CLIENTS:03d}",
                                       "provider_id": f"prov-{i % workload.PROVIDERS}",
                                       "start": start.isoformat(),
                                       "end": (start + timedelta(minutes=30)).isoformat(),
                                       "kind": "medication_management"}}))
    return raws


def family(key: bytes) -> str:
    """The key up to its second `:`, a shard's tag left out (`n:{3}:notif:x` -> `n:notif`:
    the families are summed over the shards)."""
    parts = key.decode(errors="replace").split(":")
    if len(parts) > 2 and parts[1].startswith("{") and parts[1].endswith("}"):
        parts = [parts[0], *parts[2:]]
    return ":".join(parts[:2]) if len(parts) > 1 else parts[0]


def breakdown(r: Any) -> dict[str, tuple[int, int]]:
    """MEMORY USAGE summed per key family: {family: (keys, bytes)}."""
    keys = list(r.scan_iter(count=1000))
    found: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for start in range(0, len(keys), 1000):
        chunk = keys[start:start + 1000]
        with r.pipeline(transaction=False) as pipe:
            for key in chunk:
                pipe.memory_usage(key, samples=0)
            sizes = pipe.execute()
        for key, size in zip(chunk, sizes, strict=True):
            entry = found[family(key)]
            entry[0] += 1
            entry[1] += int(size or 0)
    return {name: (v[0], v[1]) for name, v in found.items()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--bookings", type=int, default=None,
                        help="appointment.scheduled events (default 5,000; --quick 500)")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    count = args.bookings or (500 if args.quick else 5_000)
    with common.redis_server() as server:
        work = fresh_dir(server.dir, "memory")
        r = server.client(0)
        secret = workload.new_secret()
        env = common.python_env(common.product_env(server.url, work / "outbox", secret,
                                                   work / "var"))
        commands = common.product_commands(None, None, clock=False)
        port = common.web_port(commands)
        now = datetime.now(UTC)
        with common.processes(commands, env, work, work / "logs") as procs:
            common.wait_for_http(port, alive=procs)
            common.wait_settled(procs.pids)
            before = int(r.info("memory")["used_memory"])
            started = time.perf_counter()
            zone = workload.midday_zone(now)
            for raws in (workload.people_events(now, zone, "mem"), bookings(count, now)):
                _, _, refused = workload.post(port, workload.sign_all(secret, raws))
                if refused:
                    raise RuntimeError(f"{refused} events not accepted (see the web log)")
                wait_applied(r, procs.check_alive)
            plan_s = time.perf_counter() - started
            # No clock runs here (nothing is due): drain the delivery-webhook outbox as the
            # clock does every tick, so what is measured is what stays.
            outbox = WebhookOutbox(r, (), ledger_keys(r))
            while outbox.fan_out(datetime.now(UTC)):
                pass
            after = int(r.info("memory")["used_memory"])
            keys = ledger_keys(r)
            with r.pipeline(transaction=False) as pipe:
                queue_pending_counts(pipe, keys)
                pending = pending_counts(keys, pipe.execute())[0]
            parts = breakdown(r)
        box = common.machine(server.url)
    per = (after - before) / pending
    rows: list[list[Any]] = [
        ["bookings applied (events)", f"{count:,} (+{workload.CLIENTS} clients, "
                                      f"{workload.PROVIDERS} providers) in {plan_s:.1f} s"],
        ["notifications pending", f"{pending:,} ({pending / count:.1f} per booking)"],
        ["used_memory delta", f"{after - before:,} B"],
        ["**bytes per pending notification**", f"**{per:,.0f} B**"],
    ]
    detail = [[name, keys, size / pending] for name, (keys, size)
              in sorted(parts.items(), key=lambda item: -item[1][1])]
    body = (common.table(["figure", "Notifier"], rows) + "\n\n"
            + common.table(["key family", "keys", "MEMORY USAGE B per pending"], detail))
    common.report("memory", "memory: Redis bytes per pending notification", box, body,
                  {"bookings": count, "pending": pending, "used_memory_delta": after - before,
                   "bytes_per_pending": per,
                   "families": {k: {"keys": v[0], "bytes": v[1]} for k, v in parts.items()}},
                  ["Goal (issue 12): <= 1,000 B per pending notification, everything "
                   "included.", "Peers' bytes per pending task are in the burst table."])


if __name__ == "__main__":
    main()
