"""The read API's view models: what the HTTP layer shows of the ledger."""

from __future__ import annotations

from pydantic import ConfigDict

from notifier.ledger.reading import NotificationRow


class NotificationView(NotificationRow):
    """A notification as the read API shows it: the ledger's `NotificationRow`, under the
    name the OpenAPI document gives it (built from a row with `model_validate`)."""

    model_config = ConfigDict(from_attributes=True, frozen=True)
