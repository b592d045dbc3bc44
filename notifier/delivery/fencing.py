"""Whether a lease leaves time for a send (pure): the checks that fence a worker which
stalled past its lease, apart from the I/O (`delivery.deliverer` reads the lease's token
in the last look; `notif_finish.lua` and `notif_reschedule.lua` refuse a stale one).

A lease's token is its end, epoch seconds, as `begin` wrote it (a string, compared as
written). The README's "At most one send per notification" states the windows left."""

from __future__ import annotations

from collections.abc import Mapping

from notifier.config import LEASE_S
from notifier.errors import ConfigError

#: A send starts only while its lease has this much time left (seconds) beyond its
#: channel's longest call: for the step from the last look to the call (a thread waiting
#: for the interpreter lock) and for workers' clocks that disagree a little (NTP keeps
#: them within milliseconds). A worker paused for longer than this plus the call's unused
#: time, between its last look and the provider's acceptance, may send a message that
#: the worker that took its lease over sends too: the duplicate window (README).
LEASE_MARGIN_S = 1.0


def time_left_s(lease: str, at_s: float) -> float:
    """Seconds the lease whose token is `lease` has left at `at_s` (epoch seconds, by the
    sender's clock); negative once it has run out. ValueError for a token that is not a
    number."""
    return float(lease) - at_s


def may_send(lease: str, at_s: float, call_s: float) -> bool:
    """Whether a send whose longest call takes `call_s` seconds may start at `at_s` under
    the lease `lease`: it leaves at least the call and `LEASE_MARGIN_S`."""
    return time_left_s(lease, at_s) >= call_s + LEASE_MARGIN_S


def check_lease_fits(lease_s: float, batch_send_s: float,
                     call_limits_s: Mapping[str, float]) -> None:
    """Raises ConfigError (naming NOTIFIER_LEASE_S) when a lease of `lease_s` seconds
    leaves too little time for the longest of `call_limits_s` (seconds, by channel) once
    a batch has sent for as long as it may (`batch_send_s`, at most half the lease):
    every such send would be put back, again and again."""
    ran_s = min(batch_send_s, lease_s / 2)
    need_s = max(call_limits_s.values(), default=0.0) + LEASE_MARGIN_S
    if lease_s - ran_s < need_s:
        raise ConfigError(
            f"NOTIFIER_LEASE_S: {lease_s:g} s leaves less than the {need_s:g} s a send needs "
            f"(the provider's timeouts and a margin) after a batch's {ran_s:g} s; at least "
            f"{min(need_s + batch_send_s, 2 * need_s):g} (default {LEASE_S})")
