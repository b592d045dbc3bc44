"""`LoopbackRedis`: a server process of one's own, killed as in a crash and started again
on the same port and files."""

from __future__ import annotations

import pytest
import redis

from notifier.ledger.redis_process import LoopbackRedis


def test_a_killed_server_comes_back_on_its_port_with_its_append_only_file(tmp_path):
    server = LoopbackRedis(tmp_path, "--appendonly", "yes", "--appendfsync", "always").start()
    try:
        client = redis.Redis.from_url(server.url)
        client.set("k", "v")
        server.kill()
        assert not server.running()
        server.start()
        assert server.running()
        assert client.get("k") == b"v"
        client.close()
    finally:
        server.stop()
    assert not server.running()


def test_killing_a_server_never_started_says_so(tmp_path):
    server = LoopbackRedis(tmp_path)
    with pytest.raises(RuntimeError, match=f"port {server.port} was never started"):
        server.kill()


def test_pausing_or_resuming_a_server_not_running_says_so(tmp_path):
    server = LoopbackRedis(tmp_path)
    with pytest.raises(RuntimeError, match=f"port {server.port} is not running"):
        server.pause()
    with pytest.raises(RuntimeError, match=f"port {server.port} is not running"):
        server.resume()
