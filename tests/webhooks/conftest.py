"""Fixtures for the webhook tests: a real HTTP receiver of Standard Webhooks."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.webhooks.receiver import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A started `WebhookReceiver` with no endpoints yet, closed after the test."""
    with WebhookReceiver() as started:
        yield started
