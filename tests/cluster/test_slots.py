"""`key_slot` against the real cluster's CLUSTER KEYSLOT, and `assert_one_slot`."""

from __future__ import annotations

import binascii

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.errors import CrossSlot, StoreError
from notifier.ledger.cluster.slots import assert_one_slot, key_slot

#: Keys with braces in every position (tags, empty tags, unclosed ones), and non-ASCII text.
KEYS = st.text(alphabet=st.sampled_from("ab:{}é😀\x00 "), max_size=24) | st.text(max_size=24)


@settings(max_examples=60, deadline=None)
@given(key=KEYS)
def test_key_slot_is_the_clusters_own(cluster_client, key):
    assert key_slot(key) == cluster_client.cluster_keyslot(key)


def crc16_slot(hashed: bytes) -> int:
    """The spec's slot of the bytes that are hashed: CRC16-XMODEM, modulo 16384."""
    return binascii.crc_hqx(hashed, 0) % 16384


# The cluster spec's examples of hash tags.
@pytest.mark.parametrize(("key", "hashed"), [
    ("foo", b"foo"),
    ("{user1000}.following", b"user1000"),
    ("foo{}{bar}", b"foo{}{bar}"),  # an empty first tag: the whole key is hashed
    ("foo{{bar}}zap", b"{bar"),
    ("foo{bar}{zap}", b"bar"),
    ("{unclosed", b"{unclosed"),
    ("caf\u00e9", "caf\u00e9".encode()),
])
def test_only_the_first_non_empty_tag_is_hashed(key, hashed):
    assert key_slot(key) == crc16_slot(hashed)


def test_the_specs_slot_of_foo():
    assert key_slot("foo") == 12182


def test_keys_sharing_a_tag_are_in_one_slot():
    keys = ["c:{client-7}:record", "c:{client-7}:notifications", "idx:{client-7}"]
    assert assert_one_slot(keys) == key_slot("client-7")
    assert assert_one_slot(iter(keys)) == key_slot("client-7")  # any iterable, read once


def test_keys_in_several_slots_are_named_with_their_slots():
    keys = ["{a}:x", "{a}:y", "{b}:z"]
    with pytest.raises(CrossSlot) as refused:
        assert_one_slot(keys)
    assert isinstance(refused.value, StoreError)
    assert str(refused.value) == (
        f"keys in 2 slots, where one command needs one: '{{a}}:x' in slot {key_slot('a')}, "
        f"'{{a}}:y' in slot {key_slot('a')}, '{{b}}:z' in slot {key_slot('b')}")


def test_no_keys_is_a_mistake_of_the_caller():
    with pytest.raises(ValueError, match="no keys given"):
        assert_one_slot([])
