"""An event body's JSON, read as the door reads it: UTF-8 text holding one object, no key
given twice in any object, no NaN or Infinity.

`load_object(raw)` returns the body's text and its object; it raises `InvalidEvent`
naming the problem: `body` for what is not such JSON, the dotted path of a repeated key
(`id`, `data.client.first_name`) for a key given twice.

Why a repeated key is refused: parsers disagree on which copy counts (Python's and
pydantic's take the last, others the first), so a signed body could mean one thing to
the integrator's checks and another to us: the `id` included, the idempotency key.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from typing import Any

from notifier.errors import FieldProblem, InvalidEvent


class _Repeated(dict[str, Any]):
    """A JSON object in which some keys were given more than once (the last copy kept)."""

    repeated: list[str]


class _RepeatedKey(Exception):
    """A key given twice: raised out of the parser on the first one."""


def _refuse_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise _RepeatedKey
    return obj


def _mark_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) == len(pairs):
        return obj
    marked = _Repeated(obj)
    marked.repeated = [key for key, count in Counter(k for k, _ in pairs).items() if count > 1]
    return marked


def _no_constant(name: str) -> Any:
    # json.loads takes NaN, Infinity and -Infinity, which are not JSON (RFC 8259).
    raise ValueError(f"{name} is not a JSON value")


#: Built once: `json.loads` with a hook builds a decoder per call, which costs as much as
#: parsing a small event. The first fails fast on a repeated key; the second, run only
#: then, marks every object holding one, so each can be named with its path.
_STRICT = json.JSONDecoder(object_pairs_hook=_refuse_repeats, parse_constant=_no_constant)
_MARKING = json.JSONDecoder(object_pairs_hook=_mark_repeats, parse_constant=_no_constant)


def _repeated_paths(node: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    """The dotted path of every repeated key under `node`, outer objects first."""
    if isinstance(node, dict):
        for key in getattr(node, "repeated", ()):
            yield ".".join((*path, key))
        for key, value in node.items():
            yield from _repeated_paths(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from _repeated_paths(value, (*path, str(index)))


def repeated_keys(text: str) -> list[str]:
    """The dotted paths of the keys given more than once in the JSON document `text` (an
    object, or a list of them: `0.data.client.id`), [] for none; raises ValueError for
    what is not JSON. For `notifier send-event`, which must not collapse what the door
    would refuse."""
    try:
        _STRICT.decode(text)
    except _RepeatedKey:
        return list(_repeated_paths(_MARKING.decode(text)))
    return []


def load_object(raw: bytes | str) -> tuple[str, dict[str, Any]]:
    """(text, object) of a JSON body; raises `InvalidEvent` as the module docstring says.
    A UTF-8 byte order mark is ignored, as RFC 8259 allows."""
    try:
        text = raw.decode("utf-8-sig") if isinstance(raw, bytes) else raw
        try:
            body = _STRICT.decode(text)
        except _RepeatedKey:
            # Named by a second parse, which runs a few frames deeper than the first: a
            # body nested just under the limit can fail here (RecursionError, below).
            raise InvalidEvent([FieldProblem(path, "key given more than once in its "
                                                   "object; send each key once")
                                for path in _repeated_paths(_MARKING.decode(text))]) from None
    except (ValueError, RecursionError) as exc:
        # ValueError covers UnicodeDecodeError; RecursionError: nesting deeper than the
        # parser allows, e.g. 1,000 "[".
        raise InvalidEvent([FieldProblem("body", f"not valid JSON: {exc}")]) from None
    if not isinstance(body, dict):
        raise InvalidEvent([FieldProblem("body", "must be a JSON object")])
    return text, body


def strings_with_surrogates(node: Any, path: tuple[str, ...] = ()) -> Iterator[str]:
    """The dotted path of every string under `node` holding a lone surrogate (an escape
    such as "\\ud800" without its pair, which `json` lets through and pydantic refuses
    as invalid JSON, naming no field)."""
    if isinstance(node, str):
        if any("\ud800" <= char <= "\udfff" for char in node):
            yield ".".join(path) or "body"
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings_with_surrogates(key, path)
            yield from strings_with_surrogates(value, (*path, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from strings_with_surrogates(value, (*path, str(index)))
