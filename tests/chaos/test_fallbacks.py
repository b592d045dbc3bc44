"""What the chaos suite expects of a client's message a provider refused for good: the
other channel's (found by QA: one never planned was expected by nobody)."""

from __future__ import annotations

from typing import Any

from chaos.experiments import _fallbacks

SMS = "escalation_notice:p3-m0000024:message-window:sms"
EMAIL = "escalation_notice:p3-m0000024:message-window:email"
STAFF = "support_escalation:p3-m0000024:message-window:sms"


class Ledger:
    """A service whose ledger holds `fields` by id, and nothing else."""

    def __init__(self, fields: dict[str, dict[str, str]]) -> None:
        self.fields = fields

    def ledger(self, ids: list[str]) -> dict[str, dict[str, Any]]:
        return {i: self.fields.get(i, {}) for i in ids}


def test_the_other_channel_is_owed_whether_or_not_it_was_planned():
    refused = {SMS: {"to": "client", "state": "failed"}}
    never_planned = _fallbacks(Ledger(refused), {SMS: 10.0}, {SMS})
    assert never_planned == {EMAIL: 10.0}, "owed all the same: lost if it never leaves"
    planned = _fallbacks(Ledger({**refused, EMAIL: {"state": "scheduled", "due": "12.5"}}),
                         {SMS: 10.0}, {SMS})
    assert planned == {EMAIL: 12.5}


def test_a_message_to_staff_owes_nothing():
    assert _fallbacks(Ledger({STAFF: {"to": "support", "state": "failed"}}), {STAFF: 1.0},
                      {STAFF}) == {}
