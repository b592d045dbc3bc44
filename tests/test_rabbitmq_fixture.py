"""`tests.rabbitmq`: without a rabbitmq-server the RabbitMQ tests fail with the advice to
run `make rabbitmq`, never skip."""

from __future__ import annotations

import pytest

from tests import rabbitmq


def test_a_missing_rabbitmq_server_fails_with_the_advice(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="run `make rabbitmq`"):
        rabbitmq.rabbitmq_server_binary(candidates=[str(tmp_path / "rabbitmq-server")])
