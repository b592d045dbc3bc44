"""Every benchmark, one after the other: `python -m bench [--quick]`.

`--quick` (what `make bench` runs) is each benchmark's quick mode, about 2 minutes in all
on an otherwise idle 2-core machine; without it (`make bench-full`) the documented full
run: burst of 20,000 with both peers, steady 200/s for 60 s, ingest 30 s per variant,
memory of 5,000 bookings, retention of 2,000, clock at 10k and 1M pending, apply of 800
events per scenario, webhooks: 10,000 messages and a burst of 6,000 reminders beside a
dead endpoint, twice; the burst of 20,000 on one Redis, one Redis + broker and the
3-master cluster + broker (`cluster`, about 3 minutes, so only in the full run: `--quick
--only cluster` runs its quick size). Each prints its own table and writes
var/bench/{name}.json; see each module's docstring for how to read it. `--only
burst,clock` runs a subset.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

from bench import (
    apply_order,
    burst,
    clock,
    cluster_burst,
    ingest,
    memory,
    retention,
    steady,
    webhooks,
)

BENCHES: dict[str, Callable[[list[str] | None], None]] = {
    "burst": burst.main, "steady": steady.main, "ingest": ingest.main,
    "memory": memory.main, "retention": retention.main, "clock": clock.main,
    "apply": apply_order.main, "webhooks": webhooks.main, "cluster": cluster_burst.main,
}
#: Left out of `--quick` unless named in `--only`: each adds more than `make bench` should.
FULL_ONLY = frozenset({"cluster"})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=None,
                        help=f"comma-separated, of: {', '.join(BENCHES)} (default: all; with "
                        f"--quick all but {', '.join(sorted(FULL_ONLY))})")
    args = parser.parse_args()
    names = (args.only.split(",") if args.only
             else [n for n in BENCHES if not (args.quick and n in FULL_ONLY)])
    unknown = [n for n in names if n not in BENCHES]
    if unknown:
        parser.error(f"no benchmark {', '.join(unknown)} (known: {', '.join(BENCHES)})")
    started = time.perf_counter()
    for name in names:
        began = time.perf_counter()
        BENCHES[name](["--quick"] if args.quick else [])
        print(f"\n({name}: {time.perf_counter() - began:.0f} s)", flush=True)
    print(f"\nall benchmarks: {time.perf_counter() - started:.0f} s")


if __name__ == "__main__":
    main()
