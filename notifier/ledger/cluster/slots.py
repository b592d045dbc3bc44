"""Which Redis Cluster slot a key hashes to, and a check that keys taken together share one.

A cluster runs a command or Lua script only when every key it names is in one slot (of
16384): keys meant to go together share a hash tag, the part between the first `{` and the
next `}` (when not empty), which alone is hashed. These use redis-py's own CRC16
(`redis.crc.key_slot`), the one its cluster client routes by, on the key's UTF-8 bytes
(what redis-py sends for a `str`).
"""

from __future__ import annotations

from collections.abc import Iterable

from redis.crc import key_slot as _crc_key_slot

from notifier.errors import CrossSlot


def key_slot(key: str) -> int:
    """The cluster slot of `key`, 0 to 16383 (only its hash tag counts, if it has one)."""
    return _crc_key_slot(key.encode("utf-8"))


def assert_one_slot(keys: Iterable[str]) -> int:
    """The one slot all of `keys` hash to. Raises `CrossSlot` naming every key and its slot
    when they are in more than one, and `ValueError` when there are no keys."""
    slots = {key: key_slot(key) for key in keys}
    if not slots:
        raise ValueError("assert_one_slot: no keys given")
    distinct = set(slots.values())
    if len(distinct) > 1:
        listed = ", ".join(f"{key!r} in slot {slot}" for key, slot in slots.items())
        raise CrossSlot(f"keys in {len(distinct)} slots, where one command needs one: {listed}")
    return distinct.pop()
