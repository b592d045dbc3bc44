"""load_object: an event body's JSON as the door reads it (notifier/intake/json_body.py)."""

from __future__ import annotations

import json

import pytest

from notifier.errors import InvalidEvent
from notifier.intake.json_body import load_object, strings_with_surrogates

REPEATED = "key given more than once in its object; send each key once"


def problems(raw: bytes | str) -> dict[str, str]:
    with pytest.raises(InvalidEvent) as caught:
        load_object(raw)
    return {p.field: p.message for p in caught.value.problems}


@pytest.mark.parametrize(("raw", "fields"), [
    ('{"id": "e1", "id": "e2"}', ["id"]),
    ('{"id": "e1", "type": "a", "type": "b", "type": "c"}', ["type"]),
    ('{"id": "e1", "data": {"client": {"first_name": "Ana", "first_name": "Eve"}}}',
     ["data.client.first_name"]),
    ('{"id": "e1", "id": "e1", "data": {"a": 1, "a": 1, "b": {"c": 2, "c": 3}}}',
     ["id", "data.a", "data.b.c"]),
    ('{"list": [{"k": 1}, {"k": 1, "k": 2}]}', ["list.1.k"]),
])
def test_a_key_given_twice_is_refused_naming_each(raw, fields):
    assert problems(raw) == dict.fromkeys(fields, REPEATED)


def test_the_same_key_in_different_objects_is_fine():
    text, body = load_object('{"id": "e1", "data": {"id": "c1", "client": {"id": "c1"}}}')
    assert body == {"id": "e1", "data": {"id": "c1", "client": {"id": "c1"}}}


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_numbers_json_does_not_have_are_refused(constant):
    assert problems(f'{{"days_supply": {constant}}}') == {
        "body": f"not valid JSON: {constant} is not a JSON value"}


def test_a_utf8_byte_order_mark_is_ignored_and_other_encodings_refused():
    raw = {"id": "e1", "first_name": "José"}
    assert load_object(b"\xef\xbb\xbf" + json.dumps(raw).encode()) == (json.dumps(raw), raw)
    assert list(problems(json.dumps(raw).encode("utf-16"))) == ["body"]
    assert list(problems(json.dumps(raw, ensure_ascii=False).encode("latin-1"))) == ["body"]


def test_the_text_is_returned_for_validation_as_json():
    assert load_object(b'{"a": "\\u00e9"}') == ('{"a": "\\u00e9"}', {"a": "é"})


def test_lone_surrogates_are_found_by_path():
    _, body = load_object('{"id": "\\ud800", "data": {"ok": "\\ud83d\\ude00", '
                          '"list": ["x", "a\\udfffb"]}}')
    assert list(strings_with_surrogates(body)) == ["id", "data.list.1"]


def test_a_body_too_deep_to_name_its_repeated_key_is_refused_not_a_500(monkeypatch):
    """Found by QA: a repeated key nested just under the parser's depth limit passed the
    first parse, and the second one (naming the key, a few frames deeper) went over it:
    a RecursionError out of the handler, a 500. It is the body's 422 instead."""
    from notifier.intake import json_body

    class TooDeep:
        def decode(self, text: str) -> object:
            raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(json_body, "_MARKING", TooDeep())
    with pytest.raises(InvalidEvent) as refused:
        load_object('{"id": "e", "x": {"k": 1, "k": 2}}')
    assert [p.field for p in refused.value.problems] == ["body"]
