"""The local Redis Cluster: formed with the slots split evenly, keys spread by hash tag,
a master killed (its slots refused, the others served) and restarted with its data, a
hung master timing out."""

from __future__ import annotations

import pytest
import redis
from redis.crc import key_slot
from redis.exceptions import MovedError

from notifier.ledger.cluster.server import (
    SLOTS,
    ClusterNotReady,
    LocalCluster,
    cluster_ports,
    report,
    slot_ranges,
)


def tag_on(cluster: LocalCluster, index: int, name: str) -> str:
    """A key `name` with a hash tag whose slot master `index` owns."""
    return next(f"{{{name}{n}}}:k" for n in range(1000)
                if cluster.node_of_slot(key_slot(f"{name}{n}".encode())) == index)


@pytest.mark.parametrize(("masters", "expected"), [
    (1, [(0, 16383)]),
    (2, [(0, 8191), (8192, 16383)]),
    (3, [(0, 5460), (5461, 10921), (10922, 16383)]),
])
def test_the_slots_are_split_evenly_and_all_covered(masters, expected):
    assert slot_ranges(masters) == expected


@pytest.mark.parametrize("masters", [0, -1, SLOTS + 1])
def test_a_cluster_of_no_masters_or_more_than_slots_is_refused(masters):
    with pytest.raises(ValueError, match=f"1 to 16384 masters, not {masters}"):
        slot_ranges(masters)


def test_cluster_ports_leave_each_bus_port_free_and_distinct():
    ports = cluster_ports(6)
    everything = ports + [port + 10000 for port in ports]
    assert len(set(everything)) == 12
    assert max(everything) <= 65535


def test_every_node_is_ok_sees_every_master_and_reports_the_planned_map(cluster):
    ports = {node.port for node in cluster.nodes}
    for node in cluster.nodes:
        seen = report(node)
        assert seen.state == "ok"
        assert seen.up == ports
        assert seen.slot_map == cluster.expected_map()
        client = redis.Redis.from_url(node.url)
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        assert client.config_get("cluster-require-full-coverage") == {
            "cluster-require-full-coverage": "no"}
        client.close()
    assert {last - first + 1 for first, last in cluster.ranges} == {5461, 5462}


def test_each_slot_has_its_master_and_no_other_slot_exists(cluster):
    assert [cluster.node_of_slot(slot) for slot in (0, 5460, 5461, 10921, 10922, 16383)] \
        == [0, 0, 1, 1, 2, 2]
    for slot in (-1, SLOTS):
        with pytest.raises(ValueError, match=f"no slot {slot}: slots are 0 to 16383"):
            cluster.node_of_slot(slot)


def test_keys_with_different_hash_tags_land_on_different_masters(cluster, cluster_client):
    keys = [tag_on(cluster, index, "spread") for index in range(3)]
    for key in keys:
        cluster_client.set(key, key)
    for index, key in enumerate(keys):
        owner = redis.Redis.from_url(cluster.nodes[index].url)
        slot = key_slot(key.encode())
        assert owner.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot) == 1
        assert owner.get(key) == key.encode()
        other = redis.Redis.from_url(cluster.nodes[(index + 1) % 3].url)
        with pytest.raises(MovedError, match=f"^{slot} 127.0.0.1:{cluster.nodes[index].port}$"):
            other.get(key)
        owner.close()
        other.close()


def test_a_killed_masters_slots_refuse_the_others_serve_and_it_comes_back_with_its_data(
        cluster, cluster_client, master_back):
    kept, elsewhere = tag_on(cluster, 0, "kept"), tag_on(cluster, 1, "elsewhere")
    cluster_client.set(kept, "before the kill")
    cluster_client.set(elsewhere, "served")
    master_back.append(0)
    cluster.kill(0)
    with pytest.raises(redis.ConnectionError):
        cluster_client.get(kept)
    assert cluster_client.get(elsewhere) == b"served"
    cluster_client.set(elsewhere, "written while one master is down")
    with pytest.raises(ClusterNotReady, match=f"node0 on {cluster.nodes[0].port}: "
                                              "state unreachable"):
        cluster.wait_ready(timeout_s=0.2)
    cluster.restart(0)
    master_back.clear()
    assert cluster_client.get(kept) == b"before the kill"
    assert cluster_client.get(elsewhere) == b"written while one master is down"


def test_a_hung_masters_slots_time_out_with_the_clients_timeout(
        cluster, cluster_client, master_back):
    key = tag_on(cluster, 2, "hung")
    cluster_client.set(key, "v")
    master_back.append(2)
    cluster.pause(2)
    with pytest.raises(redis.TimeoutError):
        cluster_client.get(key)
    cluster.resume(2)
    master_back.clear()
    assert cluster_client.get(key) == b"v"


def test_a_node_that_does_not_start_is_reported(tmp_path):
    broken = LocalCluster(tmp_path, masters=1, appendfsync="sometimes")  # not a policy
    try:
        with pytest.raises(redis.ConnectionError):
            broken.start(timeout_s=0.5)
        assert not broken.nodes[0].running()
    finally:
        broken.stop()
