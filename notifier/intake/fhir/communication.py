"""`Communication` -> `message.received` / `message.answered`.

Only a `completed` Communication is a message sent; any other status is ignored.

- From a Patient (`sender`) to a Practitioner (the first `recipient` that is one) ->
  `message.received`; our message id is the Communication's. Without a Practitioner
  recipient (a message to a team or an organisation) it is ignored: the 48-hour window
  is a provider's.
- From a Practitioner `inResponseTo` a Communication -> `message.answered` of each message
  it answers (one event each, the answered id as the event id's suffix).
- Anything else (a message the practice starts, one between staff) is ignored.
"""

from __future__ import annotations

from typing import Any

from notifier.intake.fhir.common import Context, Defaults, Ignored, Mapped, envelope, ref_of


def map_communication(message: Any, ctx: Context, defaults: Defaults) -> Mapped:
    """A Communication as our events, or why none."""
    if message.status != "completed":
        return Ignored(f"a Communication {message.status}: only a completed one was sent")
    client = ref_of(ctx, message.sender, "Patient")
    if client is not None:
        providers = [p for r in message.recipient or ()
                     if (p := ref_of(ctx, r, "Practitioner")) is not None]
        if not providers:
            return Ignored("from a Patient to no Practitioner (Communication.recipient)")
        data = {"message": {"id": ctx.own(message), "client_id": client,
                            "provider_id": providers[0]}}
        return [envelope(message, ctx, "message.received", data)]
    if ref_of(ctx, message.sender, "Practitioner") is not None:
        answered = [a for r in message.inResponseTo or ()
                    if (a := ref_of(ctx, r, "Communication")) is not None]
        if not answered:
            return Ignored("a Practitioner's message answering none (Communication."
                           "inResponseTo)")
        return [envelope(message, ctx, "message.answered", {"message_id": a}, suffix=a)
                for a in answered]
    return Ignored("neither from a Patient nor a Practitioner's answer (Communication.sender)")
