"""The Lua scripts of the ledger, one `.lua` file each, read as package data.

Every script names each key it touches in KEYS (none is built from ARGV or from a value
read inside Redis), so each can run on Redis Cluster once the keys share a hash slot.
Each file starts with a comment block: what the script does, its KEYS, its ARGV and what
it returns. `tests/ledger/test_lua_scripts.py` checks both, statically and against a
real Redis.

A file whose name starts with `_` is not a script but a part of several: a script's line
`-- #include _name` is replaced by that file's text, verbatim (no value is filled in, so
each script is still one constant text, the same in every process).
"""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

#: A script's line naming a shared part to put in its place.
INCLUDE = re.compile(r"^-- #include (_\w+)$", re.M)


@cache
def lua_source(name: str) -> str:
    """The source of `notifier/ledger/lua/{name}.lua` (works from an installed wheel), with
    each `-- #include _part` line replaced by `_part.lua`'s text."""
    text = files(__name__).joinpath(f"{name}.lua").read_text(encoding="utf-8")
    return INCLUDE.sub(lambda m: lua_source(m.group(1)).rstrip("\n"), text)
