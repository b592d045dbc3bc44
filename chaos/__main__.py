"""Run the chaos experiments: `python -m chaos [--quick] [--only NAME,...] [--seed N]`.

Prints one row per experiment (expected, sent, duplicates in the documented windows and
outside them, lost, lateness p99; delivery webhooks received, resent, lost, changes under
two ids, unverified; wall time) under the date, the machine, the Redis version and the
seed; writes the same to `var/chaos/chaos.json`. Exits 1 when any experiment lost a
notification, sent one again outside the windows, left a permanent failure unrecorded,
lost a webhook, announced a change under two ids, sent one that did not verify, or found
another problem (each said below the table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

from bench.common import ROOT, cpu_model, table, utc_stamp
from chaos.experiments import EXPERIMENTS
from chaos.tally import Row
from notifier.ledger.redis_process import redis_server_binary

#: Where the run writes `chaos.json`.
RESULTS_DIR = ROOT / "var" / "chaos"
#: The seed of the documented run and of `make test`'s quick one. Any seed is as fair a
#: draw as another; this one's quick `providers` run has no notification timing out twice
#: in a row (13's has one: two 10 s timeouts and their backoffs, 40 s of a 2-minute
#: `make test` share), and has timeouts and permanent refusals to count.
DEFAULT_SEED = 1


def redis_version() -> str:
    """The embedded redis-server's version (`redis-server --version`)."""
    out = subprocess.run([redis_server_binary(), "--version"], capture_output=True,
                         text=True, check=False).stdout
    return next((w[2:] for w in out.split() if w.startswith("v=")), out.strip())


def commit() -> str:
    """The checkout's commit (short), with `+` when it has uncommitted changes."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True,
                              check=False).stdout.strip()

    head = git("rev-parse", "--short", "HEAD") or "unknown"
    return head + ("+" if git("status", "--porcelain", "--untracked-files=no") else "")


def heading(seed: int, quick: bool) -> str:
    return (f"{utc_stamp()}; {cpu_model()}, {os.cpu_count()} cores, load "
            f"{os.getloadavg()[0]:.2f} at start; Python {platform.python_version()}, Redis "
            f"{redis_version()}; commit {commit()}; seed {seed}"
            f"{'; quick' if quick else ''}")


def rows(results: list[Row]) -> str:
    headers = ["experiment", "expected", "sent", "expected failed", "duplicates in window",
               "duplicates outside", "lost", "lateness p99 s", "webhooks received",
               "webhooks resent", "webhooks lost", "webhook changes under two ids",
               "webhooks unverified", "wall s"]
    return table(headers, [[r.experiment, r.expected, r.sent, r.expected_failed,
                            r.dup_in_window, r.dup_outside, r.lost, r.lateness_p99_s,
                            r.webhooks.received, r.webhooks.resent, r.webhooks.lost,
                            r.webhooks.two_ids, r.webhooks.unverified, r.wall_s]
                           for r in results])


def details(results: list[Row]) -> list[str]:
    """A line per experiment: its notes, the windows its duplicates fell in, and anything
    broken with example ids."""
    lines = []
    for r in results:
        said = [*r.notes, f"{r.retried} notifications tried more than once"]
        if r.windows:
            said.append("duplicates by window: " + ", ".join(
                f"{w}: {n}" for w, n in sorted(r.windows.items())))
        said.append(f"{r.webhooks.made} webhook messages made")
        if r.failed:
            hooks = r.webhooks
            broken = [f"{n} {what}" for n, what in (
                (r.lost, "lost"), (r.dup_outside, "duplicates outside the windows"),
                (r.unrecorded_failure, "permanent failures not recorded as failed"),
                (r.ledger_disagrees, "the ledger disagrees"), (r.unexpected, "unexpected"),
                (hooks.lost, "webhook changes lost"),
                (hooks.two_ids, "webhook changes under two ids"),
                (hooks.unverified, "webhook requests unverified"))
                if n]
            examples = r.examples | hooks.examples
            said.append("FAILED: " + "; ".join(broken + r.problems)
                        + (f"; e.g. {examples}" if examples else ""))
        lines.append(f"- {r.experiment}: " + "; ".join(said))
    return lines


def run(names: list[str], seed: int, quick: bool, base: Path) -> list[Row]:
    """Each named experiment in turn, printing its row as it ends."""
    results = []
    for name in names:
        row = EXPERIMENTS[name](seed, quick, base)
        print(f"{name}: {'FAILED' if row.failed else 'ok'} in {row.wall_s:.0f} s", flush=True)
        results.append(row)
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaos",
                                     description=__doc__.split("\n", 1)[0])
    parser.add_argument("--quick", action="store_true",
                        help="the short run `make test` runs (a minute or two)")
    parser.add_argument("--only", default=",".join(EXPERIMENTS),
                        help=f"comma-separated, of: {', '.join(EXPERIMENTS)}")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    names = args.only.split(",")
    unknown = [n for n in names if n not in EXPERIMENTS]
    if unknown:
        parser.error(f"no experiment {', '.join(unknown)} (known: {', '.join(EXPERIMENTS)})")
    began, head = time.perf_counter(), heading(args.seed, args.quick)
    with tempfile.TemporaryDirectory(prefix="notifier-chaos-") as tmp:
        results = run(names, args.seed, args.quick, Path(tmp))
    print(f"\n## chaos\n\n{head}\n\n{rows(results)}\n")
    print("\n".join(details(results)))
    print(f"\nall experiments: {time.perf_counter() - began:.0f} s")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    path = RESULTS_DIR / "chaos.json"
    path.write_text(json.dumps({"heading": head, "seed": args.seed, "quick": args.quick,
                                "rows": [asdict(r) | {"failed": r.failed} for r in results]},
                               indent=2, default=str) + "\n")
    print(f"(results: {path.relative_to(ROOT)})")
    return 1 if any(r.failed for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
