"""`notifier fhir map FILE`: the events a FHIR resource or bundle becomes, for an integrator
checking their feed before pointing a Subscription at us. Nothing is sent and no Redis is
needed: the events go to standard output one JSON object a line; resources turned into
nothing go to standard error with why (`# Task/t1: ignored: not a refill request …`); a
payload we would refuse prints each problem by FHIRPath on standard error and exits 1.
`--source NAME` maps as `/fhir/r4/{NAME}/notify` does (ids prefixed `NAME~`). Fills are
counted within the file and MedicationRequests read from it only: the web's memory of
earlier notifications (Redis) is not consulted."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from notifier.config import Settings
from notifier.errors import InvalidEvent, UsageError


def cmd_fhir_map(args: argparse.Namespace, settings: Settings) -> None:
    # Imported here: the FHIR models are not every command's start-up cost.
    from notifier.intake.fhir import Defaults, map_payload
    from notifier.policy.figures import load_policy

    try:
        raw = Path(args.file).read_bytes()
    except OSError as exc:
        raise UsageError(f"{args.file}: cannot read it ({exc.strerror}): check the path") \
            from None
    defaults = Defaults.of_policy(load_policy(settings.schedules_dir),
                                  settings.fhir_video_extensions)
    source = getattr(args, "source", "") or ""
    if source and source not in settings.fhir_sources:
        raise UsageError(f"--source {source}: not one of NOTIFIER_FHIR_SOURCES "
                         f"({', '.join(settings.fhir_sources) or 'none set'})")
    try:
        mapped = map_payload(raw, defaults, source=source)
    except InvalidEvent as exc:
        for problem in exc.problems:
            print(f"{args.file}: {problem.field}: {problem.message}", file=sys.stderr)
        sys.exit(1)
    for resource in mapped:
        if resource.ignored is not None:
            print(f"# {resource.label}: ignored: {resource.ignored}", file=sys.stderr)
        for event in resource.events:
            print(json.dumps(event, ensure_ascii=False))
