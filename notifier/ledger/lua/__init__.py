"""The Lua scripts of the ledger, one `.lua` file each, read as package data.

Every script names each key it touches in KEYS (none is built from ARGV or from a value
read inside Redis), so each can run on Redis Cluster once the keys share a hash slot.
Each file starts with a comment block: what the script does, its KEYS, its ARGV and what
it returns. `tests/ledger/test_lua_scripts.py` checks both, statically and against a
real Redis.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files


@cache
def lua_source(name: str) -> str:
    """The source of `notifier/ledger/lua/{name}.lua` (works from an installed wheel)."""
    return files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
