"""Communication -> message.received (from the client) / message.answered (the reply)."""

from __future__ import annotations

import pytest

from tests.intake.fhir.build import events, ignored, resource


def test_a_patients_message_is_received():
    (event,) = events(resource("Communication"))
    assert event == {"id": "fhir.Communication.msg-1.1", "type": "message.received",
                     "occurred_at": "2026-11-29T12:00:00Z",
                     "data": {"message": {"id": "msg-1", "client_id": "pat-ana",
                                          "provider_id": "prac-rivera"}}}


def test_the_practitioners_reply_answers_it():
    reply = resource("Communication")
    reply.update(id="msg-2", sender={"reference": "Practitioner/prac-rivera"},
                 recipient=[{"reference": "Patient/pat-ana"}],
                 inResponseTo=[{"reference": "Communication/msg-1"},
                               {"reference": "Communication/msg-0"}])
    first, second = events(reply)
    assert (first["id"], first["type"], first["data"]) == (
        "fhir.Communication.msg-2.1.msg-1", "message.answered", {"message_id": "msg-1"})
    assert second["data"] == {"message_id": "msg-0"}


@pytest.mark.parametrize(("changes", "why"), [
    ({"status": "in-progress"}, "a Communication in-progress: only a completed one was sent"),
    ({"recipient": [{"reference": "Organization/clinic"}]},
     "from a Patient to no Practitioner (Communication.recipient)"),
    ({"sender": {"reference": "Practitioner/prac-rivera"},
      "recipient": [{"reference": "Patient/pat-ana"}]},
     "a Practitioner's message answering none (Communication.inResponseTo)"),
    ({"sender": {"reference": "Organization/clinic"}},
     "neither from a Patient nor a Practitioner's answer (Communication.sender)"),
])
def test_other_messages_are_ignored(changes, why):
    assert ignored(resource("Communication", **changes)) == why
